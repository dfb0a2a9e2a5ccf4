"""Twilio's Messaging webhook (SMS and WhatsApp): signed, validated, stored once, TwiML out.

Everything a message changes (customer, ticket, interaction, opt-out, audit) is one unit
of work: when the database is down or gives up, nothing is written and Twilio is told 503
so it tries again; a redelivery of a stored MessageSid changes nothing and gets the same
answer.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from twilio.twiml.messaging_response import MessagingResponse

from kokan.wiring import database, settings
from tickets.services import (
    PROVIDER_TWILIO,
    apply_delivery_status,
    keyword_reply,
    receive_message,
    record_provider_id,
    run_with_retry,
)
from webhooks import messaging_schemas
from webhooks.signature import twilio_signed

blueprint = Blueprint("twilio_messaging", __name__, url_prefix="/webhooks/twilio")

TWIML = "application/xml"
RETRY_AFTER_S = 5

log = logging.getLogger(__name__)


def twiml_reply(text: str | None) -> str:
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def database_unavailable() -> Response:
    response = jsonify(
        {
            "error_id": "database-unavailable",
            "message": "the database is not answering; nothing was stored, try again",
        }
    )
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def is_unavailable(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


@blueprint.post("/messaging")
@twilio_signed
def messaging() -> Response:
    config = settings().tickets
    message = messaging_schemas.inbound_message(request.form, config.default_region)
    try:
        result = run_with_retry(
            database(), lambda session: receive_message(session, config, message)
        )
    except DBAPIError as exc:
        if not is_unavailable(exc):
            raise
        log.error(
            "message %s not stored: database unavailable (%s)",
            message.provider_message_id,
            exc.__class__.__name__,
        )
        return database_unavailable()
    log.info(
        "message %s %s: customer %s, ticket %s%s",
        message.provider_message_id,
        "redelivered" if result.duplicate else "stored",
        result.customer_id,
        result.ticket_id,
        f", keyword {result.keyword.value}" if result.keyword else "",
    )
    answer = result.reply or keyword_reply(config, result.keyword)
    return Response(twiml_reply(answer), content_type=TWIML)


@blueprint.post("/messaging/status")
@twilio_signed
def messaging_status() -> Response:
    """Twilio's status callback for a message Kokan sent; statuses only move forward, so
    callbacks may come in any order and any number of times."""
    update = messaging_schemas.status_update(request.args, request.form)
    try:
        with database().unit_of_work() as session:
            # the callback may come before the send job recorded the SID: fill it in here
            record_provider_id(session, update.interaction_id, PROVIDER_TWILIO, update.message_sid)
            moved = apply_delivery_status(
                session,
                update.interaction_id,
                update.status,
                provider_message_id=update.message_sid,
                error=update.error,
            )
    except DBAPIError as exc:
        if not is_unavailable(exc):
            raise
        return database_unavailable()
    log.info(
        "message %s (%s): %s%s",
        update.interaction_id,
        update.message_sid,
        update.status,
        "" if moved else " (already further along; ignored)",
    )
    return Response(twiml_reply(None), content_type=TWIML)
