"""Every request's id, access-log line and metrics, kept by one WSGI middleware.

Flask's before/after/teardown hooks would do the same, but each hook costs a dispatch and
each read of the request through `flask.request` a context-local lookup; on the voice
webhook three hooks cost about as much as the engine's turn. Around the app, the environ
and the status line are at hand, and the request Flask made is found in the environ for
the matched route.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kokan import logs
from kokan.metrics import count_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""A proxy's id is reused only when it is safe to put in a log line."""
REQUEST_ID_BYTES = 16
WERKZEUG_REQUEST_KEY = "werkzeug.request"
"""Where werkzeug keeps the request object it made for an environ (its `populate_request`)."""
UNMATCHED_ROUTE = "unmatched"
"""The metrics' route label for a request no URL rule matched (a 404, a bad method)."""
UNANSWERED_STATUS = 500
"""What the log and metrics say when the app raised instead of answering (the WSGI server
then answers 500 itself)."""

log = logging.getLogger("kokan.http")


def request_id(environ: WSGIEnvironment) -> str:
    offered = environ.get(REQUEST_ID_ENVIRON_KEY)
    if offered and REQUEST_ID_PATTERN.fullmatch(offered):
        return str(offered)
    return secrets.token_hex(REQUEST_ID_BYTES)


def _route(environ: WSGIEnvironment) -> str:
    """The URL rule that matched. Read while the response starts: Flask drops the request
    from the environ when the request ends, before its app call returns."""
    request: Any = environ.get(WERKZEUG_REQUEST_KEY)
    rule = request.url_rule if request is not None else None
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def _path(environ: WSGIEnvironment) -> str:
    """The path as werkzeug decodes it: WSGI hands it over as latin-1 of the raw bytes."""
    return str(environ.get("PATH_INFO", "")).encode("latin-1").decode(errors="replace")


class RequestLog:
    """Gives each request an id (a proxy's X-Request-Id when safe, else a new one) that its
    log lines carry and its response echoes, then writes its access-log line and counts it
    in kokan_http_requests_total and the latency histogram."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        identifier = request_id(environ)
        token = logs.request_id_var.set(identifier)
        started = time.perf_counter()
        answered: list[tuple[int, str]] = []

        def start_with_id(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            headers.append((REQUEST_ID_HEADER, identifier))
            answered.append((int(status[:3]), _route(environ)))
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, start_with_id)
        finally:
            elapsed = time.perf_counter() - started
            status, route = answered[-1] if answered else (UNANSWERED_STATUS, UNMATCHED_ROUTE)
            method = environ.get("REQUEST_METHOD", "")
            count_request(method, route, status, elapsed)
            log.info("%s %s %s %.1fms", method, _path(environ), status, elapsed * 1000)
            logs.request_id_var.reset(token)
