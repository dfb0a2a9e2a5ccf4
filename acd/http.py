"""The ACD's JSON API: queues, agents and calls for the floor, the admin and the agent.

Who may do what: everyone signed in reads queues (agents see how many wait); admins
and supervisors read agents and calls, set any agent's status and listen in on SIP
calls; only admins change queues and agents; an agent reads and sets only their own
agent (`acd.agent_users` says which agent a user is).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, g, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge

from acd import browser_phone, manage, monitor, wrapups
from acd.agent_users import NoAgentForUser
from acd.errors import UnknownAgent, UnknownCall
from acd.runtime import agent_users, runtime
from admin.auth import require_role
from admin.models import Role
from kokan.errors import InvalidInput, KokanError, RoleForbidden
from kokan.wiring import database
from tickets.services import run_with_retry

MAX_BODY_BYTES = 64 * 1024
"""A queue or an agent is a few hundred bytes of JSON; far more is a mistake or a flood,
refused before it is read (the app-wide limit is sized for webhooks and uploads)."""

EVERYONE = (Role.ADMIN, Role.SUPERVISOR, Role.AGENT)
FLOOR = (Role.ADMIN, Role.SUPERVISOR)
"""Those who watch and steer the whole floor."""


blueprint = Blueprint("acd_api", __name__, url_prefix="/api/acd")
log = logging.getLogger("kokan.acd")


class BodyTooLarge(KokanError):
    error_id = "acd-body-too-large"
    status = 413


class NotJsonObject(InvalidInput):
    error_id = "acd-body-not-json"


class NotYourAgent(RoleForbidden):
    error_id = "acd-not-your-agent"


def _body() -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 (413 when too large)."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    # a chunked body has no length to check: read one byte past the limit, then look
    request.max_content_length = MAX_BODY_BYTES + 1
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes") from None
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise NotJsonObject("send a JSON object as the body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise NotJsonObject("the body is not valid JSON (UTF-8)") from None
    if not isinstance(body, dict):
        raise NotJsonObject(f"the body must be a JSON object, not {type(body).__name__}")
    return body


class NotYourCall(RoleForbidden):
    error_id = "acd-not-your-call"


def own_agent() -> str:
    """The agent the signed-in user acts as (404 when they are none)."""
    return agent_users().agent_for(g.principal.username)


def _is_own(agent_id: str) -> bool:
    try:
        return own_agent() == agent_id
    except NoAgentForUser:
        return False


def _agent(agent_id: str) -> dict[str, Any]:
    return manage.agent_json(runtime().service.agent(agent_id), agent_users())


# -- queues ---------------------------------------------------------------------------


@blueprint.get("/queues")
@require_role(*EVERYONE)
def list_queues() -> dict[str, Any]:
    service = runtime().service
    return {"queues": [service.queue(name).to_json() for name in service.queue_names()]}


@blueprint.get("/queues/<name>")
@require_role(*EVERYONE)
def show_queue(name: str) -> dict[str, Any]:
    return runtime().service.queue(name).to_json()


@blueprint.put("/queues/<name>")
@require_role(Role.ADMIN)
def put_queue(name: str) -> dict[str, Any]:
    queue = manage.put_queue(runtime(), name, _body())
    return {"name": name, "config": queue.model_dump(mode="json")}


@blueprint.get("/queues/<name>/config")
@require_role(Role.ADMIN)
def show_queue_config(name: str) -> dict[str, Any]:
    return manage.queue_config_json(runtime(), name)


# -- skills ---------------------------------------------------------------------------


@blueprint.get("/skills")
@require_role(*FLOOR)
def list_skills() -> dict[str, Any]:
    return manage.skills_json(runtime())


@blueprint.put("/skills/<name>")
@require_role(Role.ADMIN)
def put_skill(name: str) -> dict[str, Any]:
    manage.put_skill(runtime(), name, _body())
    return manage.skills_json(runtime())


@blueprint.delete("/skills/<name>")
@require_role(Role.ADMIN)
def delete_skill(name: str) -> Response:
    manage.remove_skill(runtime(), name)
    return Response(status=204)


# -- agents ---------------------------------------------------------------------------


@blueprint.get("/agents")
@require_role(*FLOOR)
def list_agents() -> dict[str, Any]:
    service = runtime().service
    return {"agents": [_agent(agent_id) for agent_id in service.agent_ids()]}


@blueprint.get("/agents/<agent_id>")
@require_role(*FLOOR)
def show_agent(agent_id: str) -> dict[str, Any]:
    return _agent(agent_id)


@blueprint.put("/agents/<agent_id>")
@require_role(Role.ADMIN)
def put_agent(agent_id: str) -> dict[str, Any]:
    agent = manage.put_agent(runtime(), agent_id, _body())
    return {"agent_id": agent_id, "config": agent.model_dump(mode="json")}


@blueprint.get("/agents/<agent_id>/config")
@require_role(Role.ADMIN)
def show_agent_config(agent_id: str) -> dict[str, Any]:
    return manage.agent_config_json(runtime(), agent_id)


@blueprint.delete("/agents/<agent_id>")
@require_role(Role.ADMIN)
def delete_agent(agent_id: str) -> Response:
    manage.remove_agent(runtime(), agent_id)
    return Response(status=204)


@blueprint.post("/agents/<agent_id>/status")
@require_role(*EVERYONE)
def set_agent_status(agent_id: str) -> dict[str, Any]:
    if g.principal.role is Role.AGENT and not _is_own(agent_id):
        raise NotYourAgent("an agent may set only their own status")
    view = manage.set_status(runtime(), agent_id, _body())
    return manage.agent_json(view, agent_users())


@blueprint.get("/me")
@require_role(*EVERYONE)
def show_me() -> dict[str, Any]:
    return _agent(own_agent())


@blueprint.post("/me/status")
@require_role(*EVERYONE)
def set_my_status() -> dict[str, Any]:
    view = manage.set_status(runtime(), own_agent(), _body())
    return manage.agent_json(view, agent_users())


# -- calls ----------------------------------------------------------------------------


@blueprint.get("/calls/<call_id>")
@require_role(*EVERYONE)
def show_call(call_id: str) -> dict[str, Any]:
    """Supervisors see any call; an agent sees the call offered to or taken by them (the
    screen pop), and no other."""
    if g.principal.role is not Role.AGENT:
        return runtime().service.call(call_id).to_json()
    try:  # an agent learns nothing of other calls, not even whether they exist
        call = runtime().service.call(call_id)
    except UnknownCall:
        call = None
    if call is None or not any(_is_own(agent) for agent in call.agents):
        raise NotYourCall("an agent sees only the calls offered to them")
    return call.to_json()


def _taken_by(call_id: str) -> str:
    """The agent who took the call; an agent may name only their own calls."""
    try:
        call = runtime().service.call(call_id)
    except UnknownCall:
        call = None
    agents = call.agents if call is not None else ()
    if g.principal.role is Role.AGENT:
        mine = [agent for agent in agents if _is_own(agent)]
        if not mine:
            raise NotYourCall("an agent codes only the calls they took")
        return mine[0]
    if not agents:
        raise UnknownCall(f"no call {call_id!r} taken by an agent in the last hour")
    return agents[0]


@blueprint.get("/me/voice-token")
@require_role(Role.AGENT)
def my_voice_token() -> dict[str, Any]:
    agent_id = own_agent()
    view = runtime().service.agent(agent_id)
    return browser_phone.mint_token(runtime().settings.twilio, agent_id, view.contact)


@blueprint.get("/wrapup-codes")
@require_role(*EVERYONE)
def list_wrapup_codes() -> dict[str, Any]:
    return wrapups.codes_json(runtime().settings)


@blueprint.post("/calls/<call_id>/wrapup")
@require_role(*EVERYONE)
def wrap_up_call(call_id: str) -> dict[str, Any]:
    body = manage.validated(wrapups.WrapupRequest, _body())
    agent_id = _taken_by(call_id)
    config, by = runtime().settings, g.principal.username

    def work(session: Session) -> dict[str, Any]:
        row = wrapups.record(session, config, call_id, agent_id, body, by)
        return wrapups.wrapup_json(row, config)

    return run_with_retry(database(), work)  # a double click: the second corrects the first


# -- supervisor listen-in (SIP calls) --------------------------------------------------


def _own_sip_uri() -> str | None:
    """The signed-in supervisor's phone when they are also an agent with a `sip_uri`."""
    try:
        contact = runtime().service.agent(own_agent()).contact
    except UnknownAgent:  # NoAgentForUser too
        return None
    uri = contact.get("sip_uri")
    return str(uri) if uri else None


@blueprint.post("/calls/<call_id>/monitor")
@require_role(*FLOOR)
def monitor_call(call_id: str) -> tuple[dict[str, Any], int]:
    """Listen to, whisper in or barge into a call bridged over SIP, from the supervisor's
    phone; on a live monitor, change its mode. 202: the worker dials, GET says how it went."""
    body = manage.validated(monitor.MonitorRequest, _body())
    default_uri = _own_sip_uri() if body.uri is None else None
    monitors = monitor.Monitors(runtime().service)
    view = monitors.request(call_id, body, default_uri=default_uri, by=g.principal.username)
    return view.to_json(), 202


@blueprint.get("/calls/<call_id>/monitor")
@require_role(*FLOOR)
def show_monitor(call_id: str) -> dict[str, Any]:
    return monitor.Monitors(runtime().service).view(call_id).to_json()


@blueprint.delete("/calls/<call_id>/monitor")
@require_role(*FLOOR)
def stop_monitor(call_id: str) -> tuple[dict[str, Any], int]:
    """Hang up the supervisor's leg; the call goes on."""
    return monitor.Monitors(runtime().service).stop(call_id).to_json(), 202
