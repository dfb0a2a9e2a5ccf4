"""The floor's live updates: the ACD's event stream as Server-Sent Events.

Served by `kokan live` (a threaded gunicorn; a held stream would take a sync web worker
out of service) on its own port, so a page from the main port opens it cross-origin with
its session cookie: the answer names that origin in CORS headers. Each event is the
stream entry as the ACD wrote it, with the stream id as the SSE id, so a browser that
reconnects (EventSource does by itself) resumes after the last event it saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Blueprint, Response, request, stream_with_context

from acd.events import Event, decode_entry
from acd.http import EVERYONE, FLOOR, own_agent
from acd.runtime import acd_service
from admin.auth import require_role
from kokan.errors import InvalidInput
from kokan.wiring import settings

blueprint = Blueprint("acd_live", __name__, url_prefix="/api/acd")

HEARTBEAT_MS = 5_000
"""Longest wait on the stream before a comment line: proxies keep the connection, a closed
page is noticed, and the blocking read stays far below the Redis client's socket timeout."""
READ_COUNT = 200
"""Events per read: a burst (a busy router tick) goes out in one write."""
RETRY_MS = 1_000
"""How soon EventSource reconnects after the stream breaks (a deploy, a restart)."""
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
LATEST = "$"


def _start_after() -> str:
    """Resume after the browser's Last-Event-ID, or `after=`; else only what comes next."""
    given = request.headers.get("Last-Event-ID") or request.args.get("after") or LATEST
    if given == LATEST:
        return _latest_id()
    if not STREAM_ID.fullmatch(given):
        raise InvalidInput("after / Last-Event-ID must be an event id like 1733356800000-0")
    return given


def _latest_id() -> str:
    """The stream's newest id now, so that what happens from the request on is all sent
    (the stream's "$" would mean "after whatever is newest when the first read runs")."""
    service = acd_service()
    last = cast(list[Any], service.redis.xrevrange(service.keys.events, count=1))
    return decode_entry(last[0][0], {}).id if last else "0-0"


def concerns(agent_id: str) -> Callable[[Event], bool]:
    """An agent's own events: offers that name them, their calls, their status."""

    def test(event: Event) -> bool:
        return agent_id in event.get("agent").split(",")

    return test


def _frames(after: str, wanted: Callable[[Event], bool] | None = None) -> Iterator[str]:
    service = acd_service()
    client, key = service.redis, service.keys.events
    yield f"retry: {RETRY_MS}\n\n"
    cursor = after
    while True:
        answer = cast(list[Any], client.xread({key: cursor}, count=READ_COUNT, block=HEARTBEAT_MS))
        if not answer:
            yield ": still here\n\n"
            continue
        for _stream, entries in answer:
            for entry_id, raw in entries:
                event = decode_entry(entry_id, raw)
                cursor = event.id
                if wanted is not None and not wanted(event):
                    continue
                data = json.dumps(
                    {"type": event.type, "at_ms": event.at_ms, **event.fields},
                    ensure_ascii=False,
                )
                yield f"id: {event.id}\nevent: acd\ndata: {data}\n\n"


def page_origins() -> set[str]:
    """Where the pages that may open the stream come from: the public URL, or the main
    port on the host this request came to."""
    config = settings()
    origins = set()
    if config.public_url:
        parts = urlsplit(config.public_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    origins.add(f"{request.scheme}://{host}:{config.port}")
    return origins


def _allow_page_origin(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and origin in page_origins():
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


blueprint.after_request(_allow_page_origin)


def _stream(frames: Iterator[str]) -> Response:
    return Response(
        stream_with_context(frames),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@blueprint.get("/events")
@require_role(*FLOOR)
def events() -> Response:
    return _stream(_frames(_start_after()))


@blueprint.get("/me/events")
@require_role(*EVERYONE)
def my_events() -> Response:
    """The signed-in agent's own events (offers, answers, ends, wrap-ups, status): their
    desk's screen pop. A user who acts as no agent gets 404."""
    agent_id = own_agent()
    return _stream(_frames(_start_after(), concerns(agent_id)))
