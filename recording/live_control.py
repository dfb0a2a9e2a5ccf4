"""Who may start, pause and resume a call's recording from the API, and the answer shown.

Supervisors and admins may control any call's recording; an agent only the recording of
a call they are on (the ACD's view of the call lists its agents). The call id is checked
before anything is looked up: a Twilio CallSid, or the id a SIP worker gave its call
(`acd.sip_handoff.SIP_CALL_ID`, which a CallSid also fits). A call held by a SIP worker is
controlled through that worker (`recording.sip_live`), any other through Twilio.
"""

from __future__ import annotations

import re
from typing import Any

from acd.agent_users import AgentUsers, NoAgentForUser
from acd.errors import UnknownCall
from acd.services import AcdService
from acd.sip_handoff import SIP_CALL_ID
from admin.models import Role
from kokan.errors import NotFound
from recording.errors import RecordingForbidden
from recording.live import CallRecorder, LiveRecording
from recording.playback import Viewer
from recording.sip_live import SipCallNotBridged, SipRecordings

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
"""Twilio's CallSid: only such a call is recorded through Twilio's API."""
CALL_ID = SIP_CALL_ID
"""Any call id the route takes: a SIP worker's (at most 48 of A-Z a-z 0-9 _.:@+-), a CallSid."""
ACTIONS = ("start", "pause", "resume")


class LiveCallNotFound(NotFound):
    error_id = "recording-live-call-not-found"


def authorize(viewer: Viewer, call_sid: str, acd: AcdService, users: AgentUsers) -> None:
    if not CALL_ID.fullmatch(call_sid):
        raise LiveCallNotFound(
            "not a call id (a Twilio CallSid, CA + 32 hex, or a SIP call's id: "
            "up to 48 letters, digits and _.:@+-)"
        )
    try:
        call = acd.call(call_sid)
    except UnknownCall:
        raise LiveCallNotFound(f"no call {call_sid} in progress") from None
    if viewer.role in (Role.ADMIN, Role.SUPERVISOR):
        return
    try:
        own = users.agent_for(viewer.username)
    except NoAgentForUser:
        own = None
    if own is None or own not in call.agents:
        raise RecordingForbidden("agents control the recording only of a call they are on")


def control(
    recorder: CallRecorder, call_sid: str, action: str, sip: SipRecordings | None = None
) -> LiveRecording:
    worker = sip.worker(call_sid) if sip is not None else None
    if sip is not None and worker is not None:
        return sip.control(call_sid, worker, action)
    if not CALL_SID.fullmatch(call_sid):
        raise SipCallNotBridged(
            f"call {call_sid!r} is not a Twilio call and no SIP worker holds it (it has ended)"
        )
    if action == "start":
        return recorder.start(call_sid)
    if action == "pause":
        return recorder.pause(call_sid)
    return recorder.resume(call_sid)


def live_json(live: LiveRecording) -> dict[str, Any]:
    sid = live.recording_sid
    return {
        "call_sid": live.call_id,
        "recording_sid": sid,
        "state": live.state,
        "pauses": live.pauses.get(sid, []) if sid else [],
    }
