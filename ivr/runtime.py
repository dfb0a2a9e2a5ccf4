"""Wires the engine for a web process: published flows, the real clock, Redis call state."""

from __future__ import annotations

from flask import Flask, current_app

from acd.twilio_runtime import queue_voice
from ivr.call_store import CallStore
from ivr.engine import Engine, Environment
from ivr.http_fetch import fetch_json
from ivr.publishing import PublishedFlows
from ivr.twilio_calls import VoiceService
from ivr.twiml import Urls
from kokan.db import utcnow
from kokan.wiring import Resources

EXTENSION_KEY = "kokan.ivr"


def init_app(app: Flask, resources: Resources) -> None:
    settings = resources.settings
    engine = Engine(
        PublishedFlows(resources.database), Environment(now=utcnow, fetch_json=fetch_json)
    )
    base = settings.public_url or f"http://{settings.host}:{settings.port}"

    def flow_for_number(called: str) -> str:
        return settings.ivr.numbers.get(called, settings.ivr.default_flow)

    app.extensions[EXTENSION_KEY] = VoiceService(
        engine=engine,
        store=CallStore(resources.redis),
        urls=Urls(base),
        flow_for_number=flow_for_number,
        on_queued=queue_voice(app).join,
        recorder=queue_voice(app).recorder,
        survey_by_sms=settings.tickets.sms_survey.mode == "always",
        flows_dir=settings.flows_dir,
    )


def voice_service() -> VoiceService:
    service: VoiceService = current_app.extensions[EXTENSION_KEY]
    return service
