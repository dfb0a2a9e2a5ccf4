"""How a web process reaches the ACD: one `AcdService` per app, on the app's Redis client.

Views and webhooks call `acd_service()`; nothing else builds a service inside a request,
so every request of a process shares the registered scripts and the name cache. The
service defers routing: a change that could make offers (an agent set available) wakes
the router process instead, so every offer is made where it will be dialed.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app

from acd.agent_users import AgentUsers
from acd.services import AcdService
from kokan.config import Settings
from kokan.wiring import Resources

EXTENSION_KEY = "kokan.acd"


@dataclass(frozen=True)
class AcdRuntime:
    service: AcdService
    users: AgentUsers
    settings: Settings


def build_service(client: redis.Redis) -> AcdService:
    """The service of a process that cannot dial (web, CLI): it wakes the router to route."""
    return AcdService(client, defer_routing=True)


def init_app(app: Flask, resources: Resources) -> None:
    service = build_service(resources.redis)
    app.extensions[EXTENSION_KEY] = AcdRuntime(
        service=service, users=AgentUsers(service), settings=resources.settings
    )


def runtime() -> AcdRuntime:
    found: AcdRuntime = current_app.extensions[EXTENSION_KEY]
    return found


def acd_service() -> AcdService:
    return runtime().service


def agent_users() -> AgentUsers:
    return runtime().users


def apply_config(service: AcdService, settings: Settings) -> None:
    """Lay `config.yaml`'s queues and agents (and their user links) over what the API
    stored in Redis: the file wins for what it names; what only the API made stays."""
    service.configure(settings.queues, settings.agents)
    users = AgentUsers(service)
    for agent_id, agent in settings.agents.items():
        users.link(agent_id, agent.user)
