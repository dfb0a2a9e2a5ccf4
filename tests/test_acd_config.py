"""Queues, skills and agents in config.yaml: validated with the file's line, applied to
the ACD in Redis."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import redis

from acd.clock import ManualClock
from acd.invariants import check_state
from acd.services import AcdService
from kokan.config import ConfigError, load

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(config_file=path, environ={})
    return str(caught.value)


def test_the_shipped_example_floor_loads_and_routes(redis_client: redis.Redis) -> None:
    settings = load(config_file=REPO_ROOT / "config.yaml", environ={}).settings
    assert {"billing", "support", "sales"} <= set(settings.queues)
    assert settings.agents
    assert settings.skills
    clock = ManualClock()
    acd = AcdService(redis_client, clock=clock, rng=random.Random(1))
    acd.configure(settings.queues, settings.agents)
    acd.configure(settings.queues, settings.agents)  # applying twice changes nothing
    assert set(acd.queue_names()) == set(settings.queues)
    assert acd.agent_ids() == sorted(settings.agents)
    for agent_id in settings.agents:
        acd.set_status(agent_id, "available")
    joined = acd.join("CA0001", "billing", skills={"japanese": 4})
    assert joined.offers
    assert joined.offers[0].agents == ("aiko",)
    assert acd.agent("aiko").contact == {"sip_uri": "sip:aiko@pbx.example.com"}
    assert check_state(redis_client) == []


def test_agents_must_name_known_queues(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, "queues:\n  support: {}\nagents:\n  aiko:\n    queues: [support, sales]\n"
    )
    assert message == "agents: aiko: unknown queues: sales (from config.yaml:3)".replace(
        "config.yaml", str(tmp_path / "config.yaml")
    )


def test_skill_levels_outside_1_to_5_name_the_key_and_line(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, "queues:\n  support: {}\nagents:\n  aiko:\n    skills: {network: 7}\n"
    )
    assert message.startswith("agents.aiko.skills.network: Input should be less than or equal to 5")
    assert message.endswith(f"(from {tmp_path / 'config.yaml'}:3)")


def test_overflow_must_go_to_a_known_queue(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        "queues:\n  support:\n    max_wait_seconds: 60\n"
        "    on_max_wait: {action: overflow, queue: nowhere}\n",
    )
    assert message.startswith("queues: support: overflow to unknown queue 'nowhere'")


def test_a_skill_catalog_catches_typos(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        "skills: {network: null}\nqueues:\n  support: {skills: {netwrok: 2}}\n",
    )
    assert message.startswith("queues: support: skills not listed under skills: netwrok")
    message = config_error(
        tmp_path,
        "skills: {network: null}\nqueues:\n  support: {}\n"
        "agents:\n  aiko: {queues: [support], skills: {netwrok: 2}}\n",
    )
    assert message.startswith("agents: aiko: skills not listed under skills: netwrok")


def test_names_that_would_break_keys_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "queues:\n  'sup:port': {}\n")
    assert message.startswith("queues: queue name 'sup:port'")
