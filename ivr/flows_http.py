"""The flow editor's JSON API: list, show, check, diff, test, simulate, publish, roll back.

Admins and supervisors read flows and try edits (check, diff, tests, simulate change
nothing); only admins publish and roll back. The rules are in ivr.flow_admin.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, TypeVar

from flask import Blueprint, g, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from acd.runtime import acd_service
from admin.auth import require_role
from admin.models import Role
from ivr import flow_admin, flow_hours
from ivr.model import LANGUAGE_CODE
from ivr.publishing import Published
from ivr.simulator import MAX_TURNS, SIMULATED_CALLED
from kokan.config import QueueSettings, Settings
from kokan.errors import InvalidInput
from kokan.wiring import database, settings
from tickets.services import run_with_retry

blueprint = Blueprint("flows_api", __name__, url_prefix="/api/flows")

READERS = (Role.ADMIN, Role.SUPERVISOR)
CHANGERS = (Role.ADMIN,)

MAX_SIMULATED_INPUTS = MAX_TURNS
"""The simulator calls a call stuck after this many answers a loop; more inputs are a mistake."""
MAX_INPUT_CHARS = 256
"""One answer: a few keys or a spoken sentence (`speech:…`), never a document."""
MAX_NOTE_CHARS = 2000
"""A publish note explains a change in a sentence or two; it is kept in the audit log."""
MAX_HTTP_ANSWERS = 50
"""Canned answers for the http nodes of one simulated call; a flow has a handful of them."""
PHONE_CHARS = 32
"""An E.164 number or a SIP user; longer is not a caller id."""

M = TypeVar("M", bound=BaseModel)


class SourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    source: str


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    source: str
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)
    skip_tests: bool = False


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1)


class SimulateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    source: str
    inputs: list[Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]] = Field(
        default_factory=list, max_length=MAX_SIMULATED_INPUTS
    )
    caller: str = Field(default="+819012345678", alias="from", min_length=1, max_length=PHONE_CHARS)
    called: str = Field(default=SIMULATED_CALLED, alias="to", min_length=1, max_length=PHONE_CHARS)
    at: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, pattern=LANGUAGE_CODE.pattern)
    http: dict[str, Any] = Field(default_factory=dict, max_length=MAX_HTTP_ANSWERS)


def flow_settings() -> Settings:
    """The configuration the checks see, with the queues admins made through the ACD's API
    known beside config.yaml's: a flow may hand calls to any queue the ACD routes."""
    config = settings()
    made = [name for name in acd_service().queue_names() if name not in config.queues]
    if not made:
        return config
    queues = {**config.queues, **{name: QueueSettings() for name in made}}
    return config.model_copy(update={"queues": queues})


def _body(model: type[M]) -> M:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


@blueprint.get("")
@require_role(*READERS)
def list_flows() -> dict[str, Any]:
    with database().sessions() as session:
        return {"flows": flow_admin.list_flows(session, flow_settings())}


@blueprint.get("/audit")
@require_role(*READERS)
def audit() -> dict[str, Any]:
    unknown = set(request.args) - {"flow"}
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    with database().sessions() as session:
        return {"entries": flow_admin.audit_entries(session, request.args.get("flow"))}


@blueprint.get("/<name>")
@require_role(*READERS)
def show(name: str) -> dict[str, Any]:
    with database().sessions() as session:
        return flow_admin.show_flow(session, flow_settings(), name)


@blueprint.get("/<name>/versions/<int:version>")
@require_role(*READERS)
def show_version(name: str, version: int) -> dict[str, Any]:
    with database().sessions() as session:
        return flow_admin.show_version(session, flow_settings(), name, version)


@blueprint.post("/<name>/check")
@require_role(*READERS)
def check(name: str) -> dict[str, Any]:
    body = _body(SourceBody)
    with database().sessions() as session:
        problems = flow_admin.check_source(session, flow_settings(), name, body.source)
    return {"ok": not problems, "errors": [flow_admin.problem_json(p) for p in problems]}


@blueprint.post("/<name>/diff")
@require_role(*READERS)
def diff(name: str) -> dict[str, Any]:
    body = _body(SourceBody)
    with database().sessions() as session:
        return flow_admin.diff_source(session, flow_settings(), name, body.source)


@blueprint.post("/<name>/tests")
@require_role(*READERS)
def tests(name: str) -> dict[str, Any]:
    body = _body(SourceBody)
    with database().sessions() as session:
        return flow_admin.run_tests(session, flow_settings(), name, body.source).to_json()


@blueprint.post("/<name>/simulate")
@require_role(*READERS)
def simulate(name: str) -> dict[str, Any]:
    body = _body(SimulateBody)
    call = flow_admin.SimulatedCall(
        inputs=body.inputs,
        caller=body.caller,
        called=body.called,
        at=body.at,
        language=body.language,
        http=body.http,
    )
    with database().sessions() as session:
        return flow_admin.simulate(session, flow_settings(), name, body.source, call)


@blueprint.post("/<name>/publish")
@require_role(*CHANGERS)
def publish(name: str) -> tuple[dict[str, Any], int]:
    body = _body(PublishBody)
    by = g.principal.username

    def work(session: Session) -> Published:
        return flow_admin.publish(
            session,
            flow_settings(),
            name,
            body.source,
            by,
            note=body.note,
            skip_tests=body.skip_tests,
        )

    published = run_with_retry(database(), work)  # two admins at once: the second goes next
    return {"version": published.version, "active_version": published.version}, 201


@blueprint.post("/<name>/rollback")
@require_role(*CHANGERS)
def rollback(name: str) -> dict[str, Any]:
    body = _body(RollbackBody)
    with database().unit_of_work() as session:
        active = flow_admin.rollback(
            session, flow_settings(), name, body.version, g.principal.username
        )
    return {"active_version": active}


@blueprint.get("/<name>/hours")
@require_role(*READERS)
def show_hours(name: str) -> dict[str, Any]:
    with database().sessions() as session:
        return flow_hours.show_hours(session, flow_settings(), name, dt.date.today())


@blueprint.put("/<name>/hours/<hours_id>")
@require_role(*CHANGERS)
def save_hours(name: str, hours_id: str) -> tuple[dict[str, Any], int]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    by = g.principal.username

    def work(session: Session) -> Published:
        return flow_hours.save_hours(session, flow_settings(), name, hours_id, dict(data), by)

    published = run_with_retry(database(), work)
    return {"version": published.version, "active_version": published.version}, 201
