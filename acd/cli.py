"""`kokan acd …`: the floor at a glance in a terminal, and an agent's status by hand.

It talks to the same Redis as the running Kokan (REDIS_URL, or the embedded Redis of
the `kokan serve` on this data folder), through the same `AcdService` as the web.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
import redis

from acd.errors import UnknownAgent, UnknownQueue
from acd.results import AgentView, QueueView
from acd.runtime import build_service
from acd.schemas import CHANNELS, AgentStatus, Presence
from acd.services import AcdService

STATUS_ORDER = tuple(str(status) for status in AgentStatus)
"""Columns of the queue table, in the order a supervisor reads the floor."""
COLUMN_GAP = "  "


def _client(ctx: click.Context) -> redis.Redis:
    from kokan.cli import load_config, open_redis  # the CLI root owns config and --config

    return open_redis(load_config(ctx))


def _server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def duration(ms: int) -> str:
    """A wait or a time in status as a person reads it: 45s, 3m05s, 2h14m, 3d04h."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned text columns, as wide as their widest cell."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _snapshot(service: AcdService) -> tuple[list[QueueView], list[AgentView]]:
    """Every queue and agent; one removed while we read is simply left out."""
    queues: list[QueueView] = []
    for name in service.queue_names():
        try:
            queues.append(service.queue(name))
        except UnknownQueue:
            continue
    agents: list[AgentView] = []
    for agent_id in service.agent_ids():
        try:
            agents.append(service.agent(agent_id))
        except UnknownAgent:
            continue
    return queues, agents


def _status_text(agent: AgentView) -> str:
    return f"{agent.status} ({agent.reason})" if agent.reason else agent.status


def render(queues: list[QueueView], agents: list[AgentView], now_ms: int) -> list[str]:
    lines: list[str] = []
    if queues:
        lines += table(
            ("QUEUE", "WAITING", "LONGEST", *(status.upper() for status in STATUS_ORDER)),
            [
                (
                    queue.name,
                    str(queue.waiting),
                    duration(queue.longest_wait_ms) if queue.waiting else "-",
                    *(str(queue.agents_by_status.get(status, 0)) for status in STATUS_ORDER),
                )
                for queue in queues
            ],
        )
    else:
        lines.append("no queues")
    lines.append("")
    if agents:
        lines += table(
            ("AGENT", "STATUS", "SINCE", *(str(channel).upper() for channel in CHANNELS)),
            [
                (
                    agent.agent_id,
                    _status_text(agent),
                    duration(now_ms - agent.since_ms),
                    *(
                        f"{agent.load[str(channel)]}/{agent.capacity[str(channel)]}"
                        for channel in CHANNELS
                    ),
                )
                for agent in agents
            ],
        )
    else:
        lines.append("no agents")
    return lines


def as_json(queues: list[QueueView], agents: list[AgentView], now_ms: int) -> dict[str, Any]:
    return {
        "now_ms": now_ms,
        "queues": [queue.to_json() for queue in queues],
        "agents": [
            {**agent.to_json(), "in_status_ms": max(0, now_ms - agent.since_ms)} for agent in agents
        ],
    }


@click.group("acd")
def acd() -> None:
    """Queues and agents: the floor now, and agents' status."""


@acd.command("status")
@click.option("--json", "json_output", is_flag=True, help="one JSON document instead of tables")
@click.pass_context
def status(ctx: click.Context, json_output: bool) -> None:
    """Each queue (waiting, longest wait, agents by status) and each agent (status, for how
    long, load/capacity per channel)."""
    client = _client(ctx)
    try:
        service = build_service(client)
        queues, agents = _snapshot(service)
        now_ms = _server_ms(client)
    finally:
        client.close()
    if json_output:
        click.echo(json.dumps(as_json(queues, agents, now_ms), ensure_ascii=False, indent=2))
        return
    for line in render(queues, agents, now_ms):
        click.echo(line)


@acd.command("agent-status")
@click.argument("agent")
@click.argument("presence", type=click.Choice([str(p) for p in Presence]))
@click.option("--reason", default=None, help="why (required for break): lunch, training, ...")
@click.pass_context
def agent_status(ctx: click.Context, agent: str, presence: str, reason: str | None) -> None:
    """Set AGENT available, on break (with --reason) or offline. Calls that can now be
    offered are routed and dialed by the running Kokan's router, woken by the change."""
    client = _client(ctx)
    try:
        service = build_service(client)
        service.set_status(agent, presence, reason)
        view = service.agent(agent)
    finally:
        client.close()
    click.echo(f"agent {view.agent_id}: {_status_text(view)}")
