"""Twilio's two voice webhooks, answered in front of Flask's dispatch.

A call's first request and each of its next steps are the requests Kokan serves most: one
per caller turn, on every call. They need nothing Flask adds around a view: no URL
variables, no session, no CSRF token, no template, no request hook that does anything for
a webhook, no response object for a TwiML text. Answered here they cost about a quarter
fewer instructions (bench.ivr_instructions) and the server about 15 % less CPU per call
(bench.ivr_webhook).

The work is the views' own: the same signature check, then webhooks.http's `start_call`
or `next_step`, in an app context as a view has, and the TwiML goes out with the headers
the view's response has. An error is answered by the app's error handlers in a request
context made for it, as Flask answers a view that raised. Any other method or path goes
to Flask unchanged.

SKIPPED_HOOKS names the request hooks Flask would have run for these routes, each a no-op
for a webhook. tests/test_twilio_voice.py fails when the app gains another, so a new hook
is never skipped unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask, Request
from werkzeug.routing import Rule

from webhooks.http import TWIML, blueprint, next_step, start_call
from webhooks.signature import check_signature

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Answer = Callable[[Request], str]

ANSWERS: dict[str, Answer] = {
    f"{blueprint.name}.voice": start_call,
    f"{blueprint.name}.voice_step": next_step,
}
"""The endpoints answered here, each by the function its Flask view calls (the TwiML)."""
METHOD = "POST"
ANSWERED = "200 OK"
SKIPPED_HOOKS = frozenset(
    {
        # Flask-WTF's own check, off: admin.csrf sets WTF_CSRF_CHECK_DEFAULT to False
        "flask_wtf.csrf:CSRFProtect.init_app.<locals>.csrf_protect",
        # returns at once for any path under /webhooks/
        "admin.csrf:_check",
    }
)
"""Flask's request hooks for these routes, as module:qualname, that a webhook skips."""


def flask_hooks(app: Flask, blueprint_name: str) -> set[str]:
    """Every request hook Flask runs for a route of `blueprint_name`, as module:qualname."""
    registries = (
        app.url_value_preprocessors,
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
    )
    return {
        f"{hook.__module__}:{hook.__qualname__}"
        for registry in registries
        for name in (None, blueprint_name)
        for hook in registry.get(name, ())
    }


class VoiceWebhooks:
    """WSGI middleware around Flask's wsgi_app: POSTs to the voice webhooks' paths are
    answered here, everything else by `wsgi_app`."""

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.routes: dict[str, tuple[Rule, Answer]] = {}
        for endpoint, answer in ANSWERS.items():
            for rule in app.url_map.iter_rules(endpoint):
                if METHOD in (rule.methods or ()) and not rule.arguments:
                    self.routes[rule.rule] = (rule, answer)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = None
        if environ.get("REQUEST_METHOD") == METHOD:
            route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self.wsgi_app(environ, start_response)
        rule, answer = route
        current = self.app.request_class(environ)
        current.url_rule = rule  # as Flask's routing sets it: the route kokan.request_log counts
        try:
            with self.app.app_context():
                check_signature(current)
                body = answer(current).encode()
        except Exception as error:  # the app's error handlers decide
            return self._answer_error(error, environ, start_response)
        start_response(ANSWERED, [("Content-Type", TWIML), ("Content-Length", str(len(body)))])
        return [body]

    def _answer_error(
        self, error: Exception, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """What Flask answers when a view raises `error` (its full_dispatch_request and
        wsgi_app): the app's error handlers, in a request context over the same environ.
        The body was read already; no error handler reads it. Called while `error` is
        being handled: Flask re-raises it with a bare `raise` when no handler takes it."""
        with self.app.request_context(environ):
            try:
                response = self.app.finalize_request(self.app.handle_user_exception(error))
            except Exception as unhandled:  # as Flask's wsgi_app
                response = self.app.handle_exception(unhandled)
            return response(environ, start_response)
