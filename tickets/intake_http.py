"""POST /webhooks/intake/email and /webhooks/intake/chat: signed JSON in, one record out.

The signature is checked over the raw bytes before the JSON is parsed (tickets.signing).
Everything a message changes is one unit of work: when the database is down nothing is
written and the sender gets 503 with Retry-After; a redelivered message id gets 200 with
the same ids and changes nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kokan.errors import InvalidInput
from kokan.wiring import database, settings
from tickets import intake, schemas, signing
from tickets.services import run_with_retry
from webhooks.messaging_http import database_unavailable, is_unavailable

blueprint = Blueprint("intake", __name__, url_prefix="/webhooks/intake")

log = logging.getLogger(__name__)


def _verified_json() -> Any:
    secret = settings().intake.secret
    raw = request.get_data(cache=True)
    signing.verify(
        secret.get_secret_value() if secret is not None else "",
        request.headers.get(signing.TIMESTAMP_HEADER),
        request.headers.get(signing.SIGNATURE_HEADER),
        raw,
    )
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the body must be JSON (UTF-8)") from None


@blueprint.post("/<any(email, chat):channel>")
def receive(channel: str) -> Response:
    data = _verified_json()
    config = settings().tickets
    payload = schemas.parse(intake.INTAKE_CHANNELS[channel], data)

    def work(session: Session) -> intake.IntakeResult:
        if isinstance(payload, intake.EmailPayload):
            return intake.receive_email(session, config, payload)
        return intake.receive_chat(session, config, payload)

    try:
        result = run_with_retry(database(), work)
    except DBAPIError as exc:
        if not is_unavailable(exc):
            raise
        log.error("%s intake not stored: database unavailable (%s)", channel, type(exc).__name__)
        return database_unavailable()
    log.info(
        "%s %s: customer %s, ticket %s",
        channel,
        "redelivered" if result.duplicate else "stored",
        result.customer_id,
        result.ticket_id,
    )
    response = jsonify(
        {
            "interaction_id": result.interaction_id,
            "customer_id": result.customer_id,
            "ticket_id": result.ticket_id,
            "duplicate": result.duplicate,
            "ticket_created": result.ticket_created,
        }
    )
    response.status_code = 200 if result.duplicate else 201
    return response
