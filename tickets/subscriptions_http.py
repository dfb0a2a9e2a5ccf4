"""Admins manage outbound webhook subscribers and read their delivery log.

The secret is shown once, in the answer that creates (or replaces) it; afterwards only the
subscriber and the database know it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.blueprints import BlueprintSetupState

from admin.auth import require_role
from admin.models import Role
from kokan.errors import InvalidInput
from kokan.wiring import EXTENSION_KEY, Resources, database
from tickets import schemas, subscriptions
from tickets.subscriptions import SubscriptionInput

blueprint = Blueprint("webhook_subscriptions", __name__, url_prefix="/api/webhooks")

DEFAULT_PAGE = 50
DELIVERY_STATUSES = (
    subscriptions.PENDING,
    subscriptions.SENDING,
    subscriptions.RETRYING,
    subscriptions.DELIVERED,
    subscriptions.FAILED,
)


@blueprint.record_once
def _enqueue_from_this_process(state: BlueprintSetupState) -> None:
    resources: Resources = state.app.extensions[EXTENSION_KEY]
    subscriptions.use_redis(resources.redis, resources.settings.outbound_webhooks)


def _json_body() -> Any:
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    return data


def _input(body: schemas.SubscriptionPatch) -> SubscriptionInput:
    return SubscriptionInput(
        url=body.url,
        event_types=body.event_types,
        active=body.active,
        description=body.description,
        secret=body.secret,
    )


def _whole(name: str, raw: str | None, default: int | None, high: int) -> int | None:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= high:
        raise InvalidInput(f"{name} must be a whole number from 1 to {high}")
    return int(raw)


@blueprint.get("/subscriptions")
@require_role(Role.ADMIN)
def list_subscriptions() -> dict[str, Any]:
    with database().unit_of_work() as session:
        rows = subscriptions.list_subscriptions(session)
        return {"subscriptions": [schemas.subscription_json(row) for row in rows]}


@blueprint.post("/subscriptions")
@require_role(Role.ADMIN)
def create_subscription() -> tuple[dict[str, Any], int]:
    body = schemas.parse(schemas.SubscriptionBody, _json_body())
    with database().unit_of_work() as session:
        row = subscriptions.create_subscription(session, _input(body))
        return schemas.subscription_json(row, with_secret=True), 201


@blueprint.get("/subscriptions/<int:subscription_id>")
@require_role(Role.ADMIN)
def show_subscription(subscription_id: int) -> dict[str, Any]:
    with database().unit_of_work() as session:
        return schemas.subscription_json(subscriptions.get_subscription(session, subscription_id))


@blueprint.patch("/subscriptions/<int:subscription_id>")
@require_role(Role.ADMIN)
def patch_subscription(subscription_id: int) -> dict[str, Any]:
    body = schemas.parse(schemas.SubscriptionPatch, _json_body())
    with database().unit_of_work() as session:
        row = subscriptions.update_subscription(session, subscription_id, _input(body))
        return schemas.subscription_json(row, with_secret=body.secret is not None)


@blueprint.delete("/subscriptions/<int:subscription_id>")
@require_role(Role.ADMIN)
def delete_subscription(subscription_id: int) -> Response:
    with database().unit_of_work() as session:
        subscriptions.delete_subscription(session, subscription_id)
    return Response(status=204)


@blueprint.get("/deliveries")
@require_role(Role.ADMIN)
def list_deliveries() -> Response:
    status = request.args.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
    subscription_id = _whole("subscription", request.args.get("subscription"), None, 2**31 - 1)
    limit = _whole("limit", request.args.get("limit"), DEFAULT_PAGE, schemas.MAX_PAGE)
    assert limit is not None
    with database().unit_of_work() as session:
        rows = subscriptions.list_deliveries(session, subscription_id, status, limit)
        return jsonify(
            {"deliveries": [schemas.delivery_json(row, attempts) for row, attempts in rows]}
        )
