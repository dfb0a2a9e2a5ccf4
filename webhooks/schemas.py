"""What Twilio's voice webhooks must carry; anything else Twilio sends is accepted and ignored."""

from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict

from acd.schemas import NAME_PATTERN
from ivr.engine import Event, Input, NoInput, Recorded
from ivr.twilio_calls import IncomingCall
from kokan.errors import InvalidInput

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
MAX_ADDRESS = 64
"""From/To are numbers, client:names or sip: URIs, stored in calls.from_number / to_number
(String(64)): a longer one would fail the call-detail insert on PostgreSQL mid-call."""
MAX_DIGITS_KEPT = 65
"""The engine refuses more than 64 digits; cut before it so a flood is not copied around."""
MAX_STEP = 100_000
WHOLE_NUMBER = re.compile(r"^[0-9]{1,6}$")
"""ASCII digits only: str.isdigit() also accepts fullwidth and superscript digits (int() fails)."""


AGENT_NAME = re.compile(NAME_PATTERN)
CALL_STATUSES = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "failed",
        "canceled",
        "answered",
    }
)
"""Every CallStatus Twilio documents for voice calls and their status callbacks."""
MAX_KEY_DIGITS = 8


class MalformedWebhook(InvalidInput):
    error_id = "twilio-webhook-malformed"


def _call_sid(form: MultiDict[str, str]) -> str:
    sid = form.get("CallSid", "")
    if not CALL_SID.fullmatch(sid):
        raise MalformedWebhook("CallSid is missing or is not a Twilio call SID (CA + 32 hex)")
    return sid


def _address(form: MultiDict[str, str], name: str) -> str:
    value = form.get(name, "")
    if len(value) > MAX_ADDRESS:
        raise MalformedWebhook(f"{name} is longer than {MAX_ADDRESS} characters")
    return value or "anonymous"


def incoming_call(form: MultiDict[str, str]) -> IncomingCall:
    return IncomingCall(
        call_sid=_call_sid(form), caller=_address(form, "From"), called=_address(form, "To")
    )


def step_number(raw: str | None) -> int:
    if raw is None or not WHOLE_NUMBER.fullmatch(raw) or int(raw) > MAX_STEP:
        raise MalformedWebhook("the step parameter must be a whole number")
    return int(raw)


def step_event(form: MultiDict[str, str], timed_out: bool) -> tuple[str, Event]:
    sid = _call_sid(form)
    if form.get("RecordingUrl"):
        duration = form.get("RecordingDuration", "0")
        seconds = int(duration) if WHOLE_NUMBER.fullmatch(duration) else 0
        return sid, Recorded(url=form["RecordingUrl"][:1024], duration=seconds)
    if timed_out:
        return sid, NoInput()
    if form.get("SpeechResult"):
        return sid, Input(speech=form["SpeechResult"][:1000])
    if form.get("Digits"):
        return sid, Input(digits=form["Digits"][:MAX_DIGITS_KEPT])
    return sid, NoInput()


def call_sid(form: MultiDict[str, str]) -> str:
    return _call_sid(form)


def call_status(form: MultiDict[str, str]) -> str:
    status = form.get("CallStatus", "")
    if status not in CALL_STATUSES:
        raise MalformedWebhook("CallStatus is missing or not a status Twilio sends")
    return status


def pressed_key(form: MultiDict[str, str]) -> str:
    return form.get("Digits", "")[:MAX_KEY_DIGITS]


def caller_address(form: MultiDict[str, str]) -> str:
    return _address(form, "From")


def called_address(form: MultiDict[str, str]) -> str:
    return _address(form, "To")


def agent_leg(args: MultiDict[str, str]) -> tuple[str, str]:
    """The caller's CallSid and the agent id that Kokan put in an agent leg's URLs."""
    call = args.get("call", "")
    agent = args.get("agent", "")
    if not CALL_SID.fullmatch(call) or not AGENT_NAME.fullmatch(agent):
        raise MalformedWebhook("the call and agent parameters must name a queued call and agent")
    return call, agent
