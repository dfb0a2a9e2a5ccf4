"""Twilio's voice webhooks: signature checked, input validated, one service call, TwiML out."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ivr.runtime import voice_service
from webhooks import schemas
from webhooks.signature import twilio_signed

blueprint = Blueprint("twilio_webhooks", __name__, url_prefix="/webhooks/twilio")

TWIML = "application/xml"


def _twiml(body: str) -> Response:
    return Response(body, content_type=TWIML)


@blueprint.post("/voice")
@twilio_signed
def voice() -> Response:
    call = schemas.incoming_call(request.form)
    return _twiml(voice_service().start(call))


@blueprint.post("/voice/step")
@twilio_signed
def voice_step() -> Response:
    step = schemas.step_number(request.args.get("step"))
    call_sid, event = schemas.step_event(request.form, timed_out=request.args.get("timeout") == "1")
    return _twiml(voice_service().step(call_sid, step, event))


@blueprint.post("/voice/voicemail-saved")
@twilio_signed
def voicemail_saved() -> Response:
    call_sid, _event = schemas.step_event(request.form, timed_out=False)
    recording = request.form.get("RecordingUrl")
    return _twiml(voice_service().fallback_voicemail_saved(call_sid, recording))
