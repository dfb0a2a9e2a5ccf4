"""Twilio's voice webhooks: signature checked, input validated, one service call, TwiML out."""

from __future__ import annotations

from flask import Blueprint, Request, Response, request

from acd.twilio_runtime import queue_voice
from ivr.runtime import voice_service
from kokan.wiring import current_request
from webhooks import schemas
from webhooks.signature import twilio_signed

blueprint = Blueprint("twilio_webhooks", __name__, url_prefix="/webhooks/twilio")

TWIML = "application/xml"


def _twiml(body: str) -> Response:
    return Response(body, content_type=TWIML)


def start_call(current: Request) -> str:
    """A call's first request (the number's voice webhook), its signature already checked:
    the TwiML. Answered by webhooks.voice_wsgi in front of Flask, and by the view below."""
    call = schemas.incoming_call(current.form)
    return voice_service().start(call)


def next_step(current: Request) -> str:
    """A call's next step (a Gather's or Record's action), its signature already checked:
    the TwiML. Answered by webhooks.voice_wsgi in front of Flask, and by the view below."""
    step = schemas.step_number(current.args.get("step"))
    call_sid, event = schemas.step_event(current.form, timed_out=current.args.get("timeout") == "1")
    return voice_service().step(call_sid, step, event)


@blueprint.post("/voice")
@twilio_signed
def voice() -> Response:
    return _twiml(start_call(current_request()))


@blueprint.post("/voice/step")
@twilio_signed
def voice_step() -> Response:
    return _twiml(next_step(current_request()))


@blueprint.post("/voice/after-agent")
@twilio_signed
def after_agent() -> Response:
    return _twiml(voice_service().after_agent(schemas.call_sid(request.form)))


@blueprint.post("/voice/voicemail-saved")
@twilio_signed
def voicemail_saved() -> Response:
    call_sid, _event = schemas.step_event(request.form, timed_out=False)
    recording = request.form.get("RecordingUrl")
    return _twiml(voice_service().fallback_voicemail_saved(call_sid, recording))


@blueprint.post("/status")
@twilio_signed
def call_status() -> Response:
    """The number's status callback: a call's end (an abandon, if it was still waiting)."""
    form = request.form
    queue_voice().caller_status(
        schemas.call_sid(form),
        schemas.call_status(form),
        schemas.caller_address(form),
        schemas.called_address(form),
    )
    return Response(status=204)


@blueprint.post("/queue/wait")
@twilio_signed
def queue_wait() -> Response:
    return _twiml(queue_voice().wait(schemas.call_sid(request.form)))


@blueprint.post("/queue/key")
@twilio_signed
def queue_key() -> Response:
    form = request.form
    return _twiml(
        queue_voice().key(
            schemas.call_sid(form), schemas.pressed_key(form), schemas.caller_address(form)
        )
    )


@blueprint.post("/queue/agent")
@twilio_signed
def queue_agent() -> Response:
    call, agent = schemas.agent_leg(request.args)
    return _twiml(queue_voice().agent_answered(call, agent))


@blueprint.post("/queue/agent-status")
@twilio_signed
def queue_agent_status() -> Response:
    call, agent = schemas.agent_leg(request.args)
    queue_voice().agent_leg_status(call, agent, schemas.call_status(request.form))
    return Response(status=204)
