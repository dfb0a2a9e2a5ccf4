"""CSRF protection (Flask-WTF) where a browser could be tricked into sending a request.

A request is checked when it changes something and a browser's ambient credential could be
behind it: any page form (the sign-in form too, against login CSRF) and any API call made
with the web session cookie. Bearer-token calls and webhooks carry no ambient credential
(Twilio and the intake sign their requests instead), so they are not checked. Pages put the
token in their forms; their JavaScript sends it as the `X-CSRFToken` header.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from admin.auth import has_bearer_token, session_user_id

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PAGE_BLUEPRINTS = frozenset({"pages"})
"""Blueprints whose every form is checked, signed in or not."""
WEBHOOK_PREFIX = "/webhooks/"
"""Providers' webhooks prove themselves by signature and never act on a web session, so a
forged cross-site post gains nothing there: no token to check (and the voice webhook, the
hottest route, skips the session and header lookups)."""

csrf = CSRFProtect()


def _check() -> None:
    if request.path.startswith(WEBHOOK_PREFIX):
        return
    if request.method in SAFE_METHODS or has_bearer_token():
        return
    if request.blueprint in PAGE_BLUEPRINTS or session_user_id() is not None:
        csrf.protect()


def _refused(error: CSRFError) -> tuple[Response | str, int]:
    if request.blueprint in PAGE_BLUEPRINTS:
        return render_template("error.html", status=400, message=error.description), 400
    return jsonify({"error_id": "csrf-failed", "message": error.description}), 400


def init_app(app: Flask) -> None:
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # _check decides which requests need it
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session
    csrf.init_app(app)
    app.before_request(_check)
    app.register_error_handler(CSRFError, _refused)
