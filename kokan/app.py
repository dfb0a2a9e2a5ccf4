"""The Flask app factory (gunicorn: `gunicorn 'kokan.app:create_app()'`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from kokan import config as config_module
from kokan import logs
from kokan.config import Settings
from kokan.db import Database
from kokan.errors import KokanError
from kokan.redis_conn import connect
from kokan.request_log import RequestLog
from kokan.secret_key import ensure_secret_key
from kokan.wiring import Resources, init_app
from webhooks.signature import request_class
from webhooks.voice_wsgi import VoiceWebhooks

MAX_CONTENT_LENGTH = 16 * 1024 * 1024
"""Webhooks and API bodies are small; refuse a flood before it is read into memory."""

REDIS_RETRY_AFTER_S = 2
"""An embedded Redis restarts in well under a second; a managed one fails over in a few."""

JSON_PATH_PREFIXES = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")

log = logging.getLogger("kokan.http")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app; `test_config` may carry KOKAN_SETTINGS (a Settings) and Flask keys."""
    test_config = dict(test_config or {})
    settings: Settings = test_config.pop("KOKAN_SETTINGS", None) or config_module.load().settings
    if not test_config.get("TESTING"):
        logs.configure(settings.log_level, config_module.secret_values(settings))

    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=ensure_secret_key(settings),
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        JSON_SORT_KEYS=False,
    )
    app.config.update(test_config)
    # webhooks.signature: forms twilio reads cheaply, body limits read from the config once
    app.request_class = request_class(app.config)

    if settings.redis_url is None:
        raise config_module.ConfigError(
            "redis_url: the web app needs REDIS_URL (kokan serve sets it for its embedded Redis)"
        )
    resources = Resources(
        settings=settings,
        database=Database(settings.effective_database_url),
        redis=connect(settings.redis_url),
    )
    init_app(app, resources)
    _install_error_handlers(app)

    from acd import runtime as acd_runtime
    from acd import twilio_runtime as acd_twilio
    from acd.http import blueprint as acd_api
    from acd.live_http import blueprint as acd_live
    from admin import web as web_ui
    from admin.http import blueprint as admin_api
    from admin.openapi_http import blueprint as openapi_doc
    from admin.reports_http import blueprint as reports_api
    from admin.staffing_http import blueprint as staffing_api
    from ivr import runtime as ivr_runtime
    from ivr.flows_http import blueprint as flows_api
    from ivr.http import blueprint as ivr_media
    from kokan.health import blueprint as health
    from recording.http import blueprint as recordings_api
    from tickets.http import blueprint as tickets_api
    from tickets.intake_http import blueprint as intake_webhooks
    from tickets.proactive_http import blueprint as proactive_api
    from tickets.subscriptions_http import blueprint as webhook_subscriptions
    from webhooks.http import blueprint as twilio_webhooks
    from webhooks.messaging_http import blueprint as twilio_messaging
    from webhooks.recording_http import blueprint as twilio_recordings

    acd_twilio.init_app(app, resources)
    ivr_runtime.init_app(app, resources)
    acd_runtime.init_app(app, resources)
    app.register_blueprint(health)
    app.register_blueprint(admin_api)
    app.register_blueprint(ivr_media)
    app.register_blueprint(twilio_webhooks)
    app.register_blueprint(twilio_messaging)
    app.register_blueprint(twilio_recordings)
    app.register_blueprint(tickets_api)
    app.register_blueprint(intake_webhooks)
    app.register_blueprint(webhook_subscriptions)
    app.register_blueprint(proactive_api)
    app.register_blueprint(acd_api)
    app.register_blueprint(acd_live)
    app.register_blueprint(recordings_api)
    app.register_blueprint(reports_api)
    app.register_blueprint(staffing_api)
    app.register_blueprint(flows_api)
    app.register_blueprint(openapi_doc)
    web_ui.init_app(app, settings)
    _wrap_wsgi(app, settings)
    return app


def _wrap_wsgi(app: Flask, settings: Settings) -> None:
    """Middleware around Flask, once every route and hook is in place (the voice webhooks'
    front reads the routes)."""
    app.wsgi_app = VoiceWebhooks(app, app.wsgi_app)  # type: ignore[method-assign]
    if settings.trust_proxy_hops:
        hops = settings.trust_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    # outermost: its id is on every log line of the request, its timing covers it all
    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]


def _wants_json() -> bool:
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json"


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(KokanError)
    def kokan_error(error: KokanError) -> tuple[Response, int]:
        response = jsonify(error.to_json())
        if error.status == 401:
            # RFC 9110: a 401 names the scheme the client should use
            response.headers["WWW-Authenticate"] = 'Bearer realm="kokan"'
        return response, error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if not _wants_json():
            return error
        status = error.code or 500
        error_id = (error.name or "error").lower().replace(" ", "-")
        body = {"error_id": error_id, "message": error.description}
        response = jsonify(body)
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value  # Allow on 405, Retry-After, WWW-Authenticate
        return response, status

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def redis_unavailable(error: redis.exceptions.RedisError) -> tuple[Response, int]:
        """Redis restarting or out of reach: nothing was changed; ask the client (Twilio
        included) to try again shortly instead of reporting a bug."""
        log.error("Redis unavailable: %s", error)
        body = {
            "error_id": "redis-unavailable",
            "message": "the live state store is unavailable; nothing was changed, try again",
            "request_id": logs.request_id_var.get(),
        }
        response = jsonify(body)
        response.headers["Retry-After"] = str(REDIS_RETRY_AFTER_S)
        return response, 503

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        body = {
            "error_id": "internal-error",
            "message": "an unexpected error happened; it has been logged",
            "request_id": logs.request_id_var.get(),
        }
        return jsonify(body), 500
