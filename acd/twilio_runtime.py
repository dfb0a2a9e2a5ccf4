"""Wires the ACD's Twilio driver for a web process (the router builds its own)."""

from __future__ import annotations

import redis
from flask import Flask, current_app

from acd.dialer import TwilioCalls
from acd.queue_settings import StoredQueues, hold_music_problem
from acd.router import Router
from acd.services import AcdService
from acd.twilio_calls import QueueVoice
from acd.twilio_legs import TwilioLegs
from acd.twilio_twiml import QueueUrls
from kokan.config import ConfigError, Settings
from kokan.twilio_rest import rest_client
from kokan.wiring import Resources

EXTENSION_KEY = "kokan.acd.twilio"


def public_base(settings: Settings) -> str:
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def build_calls(acd: AcdService, client: redis.Redis, settings: Settings) -> TwilioCalls:
    return TwilioCalls(
        acd=acd,
        legs=TwilioLegs(client),
        urls=QueueUrls(public_base(settings)),
        rest=lambda: rest_client(settings),
        queues=StoredQueues(client, acd.keys, settings.queues),
        caller_id=settings.twilio.caller_id,
    )


def init_app(app: Flask, resources: Resources) -> None:
    settings = resources.settings
    acd = AcdService(resources.redis, defer_routing=True)
    calls = build_calls(acd, resources.redis, settings)
    app.extensions[EXTENSION_KEY] = QueueVoice(
        acd=acd,
        legs=calls.legs,
        calls=calls,
        urls=calls.urls,
        queues=calls.queues,
    )


def queue_voice(app: Flask | None = None) -> QueueVoice:
    found: QueueVoice = (app or current_app).extensions[EXTENSION_KEY]
    return found


def check_hold_music(settings: Settings) -> None:
    """A missing file would make Twilio skip the music and come straight back: a hold loop
    spinning on the web workers. Refuse to route until it is fixed."""
    for name, queue in settings.queues.items():
        problem = hold_music_problem(settings, queue.hold_music)
        if problem is not None:
            raise ConfigError(f"queues.{name}.hold_music: {problem}")


def build_router(client: redis.Redis, settings: Settings) -> Router:
    """The routing loop's pieces, with config.yaml's queues and agents applied first."""
    from acd.runtime import apply_config

    check_hold_music(settings)
    acd = AcdService(client)
    apply_config(acd, settings)
    return Router(acd, build_calls(acd, client, settings))
