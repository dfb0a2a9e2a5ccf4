"""The recordings API: list and search, one recording with its transcript, audio with Range.

Ids in URLs are integers (the route converter refuses anything else); file names come
from the row, never from the request.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.wsgi import wrap_file

from acd.runtime import runtime
from acd.twilio_runtime import queue_voice
from admin.auth import require_role
from admin.models import Role
from kokan.wiring import database, settings
from recording.live_control import authorize, control, live_json
from recording.playback import (
    Viewer,
    list_recordings,
    open_audio,
    recording_detail,
)
from recording.schemas import RecordingQuery
from recording.sip_live import SipRecordings
from recording.storage import Storage, storage_for

blueprint = Blueprint("recordings_api", __name__, url_prefix="/api/recordings")

ALL_ROLES = (Role.ADMIN, Role.SUPERVISOR, Role.AGENT)
"""Agents pass the role check; recording.playback limits them to their own calls."""


STORAGE_EXTENSION = "kokan.recording.storage"


def _storage() -> Storage:
    """One per process: an S3 client is built once, not per play."""
    found: Storage | None = current_app.extensions.get(STORAGE_EXTENSION)
    if found is None:
        found = current_app.extensions[STORAGE_EXTENSION] = storage_for(settings())
    return found


def _viewer() -> Viewer:
    principal = g.principal
    return Viewer(user_id=principal.user_id, username=principal.username, role=principal.role)


@blueprint.get("")
@require_role(*ALL_ROLES)
def index() -> dict[str, Any]:
    query = RecordingQuery.from_args(request.args.to_dict())
    with database().unit_of_work() as session:
        page = list_recordings(
            session, _viewer(), query, agents_hear_own=settings().recording.agents_hear_own
        )
    return page.model_dump(mode="json")


@blueprint.get("/<int:recording_id>")
@require_role(*ALL_ROLES)
def show(recording_id: int) -> dict[str, Any]:
    with database().unit_of_work() as session:
        detail = recording_detail(
            session, _viewer(), recording_id, agents_hear_own=settings().recording.agents_hear_own
        )
    return detail.model_dump(mode="json")


@blueprint.post("/live/<call_sid>/<any(start, pause, resume):action>")
@require_role(*ALL_ROLES)
def live(call_sid: str, action: str) -> dict[str, Any]:
    """Start (on_demand), pause or resume (card numbers) the recording of a call in progress,
    on Twilio or held by a SIP worker."""
    acd = runtime()
    authorize(_viewer(), call_sid, acd.service, acd.users)
    recorder = queue_voice().recorder
    return live_json(control(recorder, call_sid, action, SipRecordings(acd.service, recorder)))


@blueprint.get("/<int:recording_id>/audio")
@require_role(*ALL_ROLES)
def audio(recording_id: int) -> Response:
    download = request.args.get("download") == "1"
    with database().unit_of_work() as session:
        found = open_audio(
            session,
            _storage(),
            _viewer(),
            recording_id,
            byte_range=request.headers.get("Range"),
            download=download,
            agents_hear_own=settings().recording.agents_hear_own,
        )
    response = Response(
        wrap_file(request.environ, found.handle),
        mimetype=found.content_type,
        direct_passthrough=True,
    )
    response.content_length = found.size
    response.headers["Content-Disposition"] = (
        f'{"attachment" if download else "inline"}; filename="{found.download_name}"'
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.private = True
    response.cache_control.no_cache = True
    if found.sha256:
        response.set_etag(found.sha256)
    # Range and If-Range / If-None-Match, as send_file(conditional=True) does
    response.make_conditional(request.environ, accept_ranges=True, complete_length=found.size)
    return response
