"""Who may start, pause and resume a call's recording from the API, and the answer shown.

Supervisors and admins may control any call's recording; an agent only the recording of
a call they are on (the ACD's view of the call lists its agents). The call id is checked
against Twilio's CallSid pattern before anything is looked up.
"""

from __future__ import annotations

import re
from typing import Any

from acd.agent_users import AgentUsers, NoAgentForUser
from acd.errors import UnknownCall
from acd.services import AcdService
from admin.models import Role
from kokan.errors import NotFound
from recording.errors import RecordingForbidden
from recording.live import CallRecorder, LiveRecording
from recording.playback import Viewer

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
ACTIONS = ("start", "pause", "resume")


class LiveCallNotFound(NotFound):
    error_id = "recording-live-call-not-found"


def authorize(viewer: Viewer, call_sid: str, acd: AcdService, users: AgentUsers) -> None:
    if not CALL_SID.fullmatch(call_sid):
        raise LiveCallNotFound("not a call id (a Twilio CallSid: CA + 32 hex)")
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


def control(recorder: CallRecorder, call_sid: str, action: str) -> LiveRecording:
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
