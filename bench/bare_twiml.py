"""The baseline: a bare Flask endpoint that returns fixed TwiML, served the same way as Kokan."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response

TWIML_FILE_ENV = "BENCH_TWIML_FILE"


def create_app() -> Flask:
    app = Flask(__name__)
    body = Path(os.environ[TWIML_FILE_ENV]).read_text(encoding="utf-8")

    @app.post("/webhooks/twilio/voice")
    def voice() -> Response:
        return Response(body, content_type="application/xml")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
