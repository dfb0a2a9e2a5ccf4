"""Twilio's recording status callback for call recordings: signed, validated, handed to a job.

A finished recording (`completed`) becomes a job that writes the row (once per
RecordingSid) and enqueues the fetch, which chains conversion and transcription; the
webhook itself touches only Redis, so it answers at once even while the database is
away. `absent` (Twilio kept nothing, e.g. silence throughout) and progress statuses are
logged and acknowledged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from acd.schemas import NAME_PATTERN
from kokan.wiring import redis_client
from recording.live import finished
from recording.schemas import AGENT_PATTERN
from recording.services import enqueue_call_recording
from recording.twilio_urls import RECORDING_SID, parse_recording_url
from webhooks.schemas import CALL_SID, WHOLE_NUMBER, MalformedWebhook
from webhooks.signature import twilio_signed

blueprint = Blueprint("twilio_recordings", __name__, url_prefix="/webhooks/twilio")

RECORDING_STATUSES = frozenset(
    {"in-progress", "paused", "stopped", "processing", "completed", "absent", "failed"}
)
"""Every RecordingStatus Twilio documents for recordings and their callbacks."""
MAX_URL = 1024
"""A RecordingUrl is about 130 characters; anything near this is not one."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordingCallback:
    call_sid: str
    recording_sid: str
    recording_url: str
    status: str
    duration_s: int | None
    agent: str | None
    queue: str | None


def recording_callback(args: MultiDict[str, str], form: MultiDict[str, str]) -> RecordingCallback:
    """The call comes from Kokan's own (signed) callback URL, not the form's CallSid: a
    conference's recording names no caller's CallSid."""
    call = args.get("call", "")
    if not CALL_SID.fullmatch(call):
        raise MalformedWebhook("the call parameter must name the caller's CallSid")
    sid = form.get("RecordingSid", "")
    if not RECORDING_SID.fullmatch(sid):
        raise MalformedWebhook("RecordingSid is missing or is not a Twilio recording SID")
    status = form.get("RecordingStatus", "")
    if status not in RECORDING_STATUSES:
        raise MalformedWebhook("RecordingStatus is missing or not a status Twilio sends")
    url = form.get("RecordingUrl", "")
    if status == "completed":
        if not url or len(url) > MAX_URL:
            raise MalformedWebhook("RecordingUrl is missing from a completed recording")
        parse_recording_url(url, sid)  # InvalidRecordingUrl (400) names the problem
    duration = form.get("RecordingDuration", "")
    agent, queue = args.get("agent") or None, args.get("queue") or None
    if agent is not None and not re.fullmatch(AGENT_PATTERN, agent):
        raise MalformedWebhook("the agent parameter is not an agent id")
    if queue is not None and not re.fullmatch(NAME_PATTERN, queue):
        raise MalformedWebhook("the queue parameter is not a queue name")
    return RecordingCallback(
        call_sid=call,
        recording_sid=sid,
        recording_url=url,
        status=status,
        duration_s=int(duration) if WHOLE_NUMBER.fullmatch(duration) else None,
        agent=agent,
        queue=queue,
    )


@blueprint.post("/recording")
@twilio_signed
def recording_status() -> Response:
    callback = recording_callback(request.args, request.form)
    if callback.status != "completed":
        log.info(
            "recording %s of %s: %s", callback.recording_sid, callback.call_sid, callback.status
        )
        return Response(status=204)
    client = redis_client()
    pauses = finished(client, callback.call_sid, callback.recording_sid)
    enqueue_call_recording(
        client,
        provider_call_id=callback.call_sid,
        recording_url=callback.recording_url,
        recording_sid=callback.recording_sid,
        duration_s=callback.duration_s,
        agent_id=callback.agent,
        queue_name=callback.queue,
        pauses=pauses,
    )
    log.info(
        "recording %s of %s finished; kept by a job", callback.recording_sid, callback.call_sid
    )
    return Response(status=204)
