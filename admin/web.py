"""Wires the web UI into the app: languages, CSRF, the session cookie, the pages."""

from __future__ import annotations

import datetime as dt

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from admin import csrf, i18n
from admin.pages import blueprint as pages
from kokan.config import Settings

SESSION_LIFETIME = dt.timedelta(hours=12)
"""A shift and its overtime: a browser left signed in overnight must sign in again."""
TRANSLATIONS_CACHE = "cache/translations"
"""Under the data folder: the compiled catalogs (admin.i18n), remade when their source changes."""


WEBHOOK_PATHS = "/webhooks/"
"""Requests from Twilio and other systems: signed, never carrying a session cookie."""


class PeoplesSessions(SecureCookieSessionInterface):
    """Sessions are for people in browsers. A webhook gets Flask's null session (it can read
    it, empty, and any write fails loudly) instead of a cookie signer built for it on each
    request: the IVR's hot path does only the IVR's work."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(WEBHOOK_PATHS):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app: Flask, settings: Settings) -> None:
    secure = (settings.public_url or "").startswith("https://")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,  # only over TLS when the public address is https
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = PeoplesSessions()
    i18n.init_app(app, settings.resolved_data_dir / TRANSLATIONS_CACHE)
    csrf.init_app(app)
    app.register_blueprint(pages)
