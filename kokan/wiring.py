"""Per-process resources (database, Redis) hung on the Flask app, reached from views and services."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, Request, current_app, request

from kokan.config import Settings
from kokan.db import Database

EXTENSION_KEY = "kokan"


@dataclass
class Resources:
    settings: Settings
    database: Database
    redis: redis.Redis


def init_app(app: Flask, resources: Resources) -> None:
    app.extensions[EXTENSION_KEY] = resources


def resources() -> Resources:
    found: Resources = current_app.extensions[EXTENSION_KEY]
    return found


def database() -> Database:
    return resources().database


def redis_client() -> redis.Redis:
    return resources().redis


def settings() -> Settings:
    return resources().settings


def current_request() -> Request:
    """The request itself. Each attribute read through `flask.request` is a context-local
    lookup (thousands of instructions); code on the webhooks' path that reads several takes
    the request once."""
    found: Request = request._get_current_object()  # type: ignore[attr-defined]
    return found
