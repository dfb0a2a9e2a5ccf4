"""`kokan acd …` as an operator runs it: a real subprocess against a real Redis, either the
one REDIS_URL names or the embedded one a running `kokan serve` keeps in its data folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from acd.cli import duration, table
from acd.schemas import AgentConfig, QueueConfig
from acd.services import AcdService
from kokan.embedded_redis import MAX_UNIX_SOCKET_PATH, EmbeddedRedis
from tests.conftest import run_kokan, short_tmp_dir


def kokan(config: Path, *args: str, redis_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {"REDIS_URL": redis_url} if redis_url else {}
    return run_kokan("--config", str(config), *args, env=env, cwd=config.parent)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config of its own, so the repository's config.yaml never leaks in."""
    path = tmp_path / "config.yaml"
    path.write_text(f"data_dir: {tmp_path / 'var'}\n", encoding="utf-8")
    return path


@pytest.fixture
def floor(redis_client: redis.Redis) -> AcdService:
    """Two queues, three agents in different states, one call waiting."""
    service = AcdService(redis_client)
    service.put_queue("billing", QueueConfig(priority=10))
    service.put_queue("sales", QueueConfig())
    service.put_agent("aiko", AgentConfig(queues=["billing", "sales"]))
    service.put_agent("ben", AgentConfig(queues=["billing"]))
    service.put_agent("chika-long-name", AgentConfig(queues=["sales"]))
    service.set_status("aiko", "break", "昼食")
    service.set_status("ben", "available")
    service.join("CA-cli-1", "sales")
    return service


def test_status_prints_aligned_queues_and_agents(
    floor: AcdService, config_file: Path, redis_url: str
) -> None:
    result = kokan(config_file, "acd", "status", redis_url=redis_url)
    assert result.returncode == 0, result.stderr
    queue_lines, agent_lines = result.stdout.strip().split("\n\n")
    header, *rows = queue_lines.splitlines()
    assert header.split()[:4] == ["QUEUE", "WAITING", "LONGEST", "OFFLINE"]
    assert [row.split()[0] for row in rows] == ["billing", "sales"]
    sales = rows[1].split()
    waiting_at = header.index("WAITING")
    assert rows[1][waiting_at:].split()[0] == "1"  # the column lines up under its title
    assert sales[2].endswith("s")  # longest wait as a duration
    available = header.split().index("AVAILABLE")
    assert [row.split()[available] for row in rows] == ["1", "0"]
    header, *rows = agent_lines.splitlines()
    assert header.split() == ["AGENT", "STATUS", "SINCE", "VOICE", "CHAT", "SMS"]
    by_agent = {row.split()[0]: row for row in rows}
    assert "break (昼食)" in by_agent["aiko"]
    assert by_agent["ben"].split()[1] == "available"
    assert by_agent["ben"].split()[3] == "0/1"
    since_at = header.index("SINCE")
    assert all(row[since_at - 1] == " " and row[since_at] != " " for row in rows)


def test_status_json_is_the_same_floor_for_machines(
    floor: AcdService, config_file: Path, redis_url: str
) -> None:
    result = kokan(config_file, "acd", "status", "--json", redis_url=redis_url)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    waiting = {queue["name"]: queue["waiting"] for queue in data["queues"]}
    assert waiting == {"billing": 0, "sales": 1}
    agents = {agent["agent_id"]: agent for agent in data["agents"]}
    assert agents["aiko"]["reason"] == "昼食"
    assert agents["ben"]["in_status_ms"] >= 0
    assert agents["chika-long-name"]["status"] == "offline"


def test_agent_status_sets_and_refuses_clearly(
    floor: AcdService, config_file: Path, redis_url: str
) -> None:
    done = kokan(config_file, "acd", "agent-status", "aiko", "available", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "agent aiko: available"
    assert floor.agent("aiko").status == "available"
    no_reason = kokan(config_file, "acd", "agent-status", "ben", "break", redis_url=redis_url)
    assert no_reason.returncode == 1
    assert "a break needs a reason" in no_reason.stderr
    assert floor.agent("ben").status == "available"
    missing = kokan(config_file, "acd", "agent-status", "nobody", "offline", redis_url=redis_url)
    assert missing.returncode == 1
    assert "no agent named 'nobody'" in missing.stderr


@pytest.fixture
def serve_data_dir() -> Iterator[Path]:
    directory = short_tmp_dir("kokan-acd-cli-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _embedded_config(data_dir: Path) -> Path:
    path = data_dir / "config.yaml"
    path.write_text(f"data_dir: {data_dir}\n", encoding="utf-8")
    return path


def test_status_finds_the_embedded_redis_of_a_running_kokan(serve_data_dir: Path) -> None:
    config = _embedded_config(serve_data_dir)
    with EmbeddedRedis(serve_data_dir) as server:  # what `kokan serve` starts
        AcdService(redis.Redis.from_url(server.url)).put_queue("support", QueueConfig())
        result = kokan(config, "acd", "status", redis_url=None)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1].split()[0] == "support"
    stopped = kokan(config, "acd", "status", redis_url=None)
    assert stopped.returncode == 2
    assert "Kokan is not running" in stopped.stderr
    assert "kokan serve" in stopped.stderr


def test_status_finds_an_embedded_redis_on_a_port_when_the_folder_is_deep(
    serve_data_dir: Path,
) -> None:
    deep = serve_data_dir / ("d" * (MAX_UNIX_SOCKET_PATH - len(str(serve_data_dir))))
    config = _embedded_config(serve_data_dir)
    config.write_text(f"data_dir: {deep}\n", encoding="utf-8")
    with EmbeddedRedis(deep) as server:
        assert server.port is not None
        AcdService(redis.Redis.from_url(server.url)).put_agent("deep", AgentConfig())
        result = kokan(config, "acd", "status", "--json", redis_url=None)
        assert result.returncode == 0, result.stderr
        assert [agent["agent_id"] for agent in json.loads(result.stdout)["agents"]] == ["deep"]


@pytest.mark.parametrize(
    ("ms", "shown"),
    [(0, "0s"), (-5, "0s"), (59_999, "59s"), (65_000, "1m05s"), (7_260_000, "2h01m")],
)
def test_duration(ms: int, shown: str) -> None:
    assert duration(ms) == shown


def test_duration_in_days() -> None:
    assert duration((3 * 24 + 4) * 3_600_000) == "3d04h"


def test_table_aligns_columns() -> None:
    lines = table(("A", "LONG"), [("xxxx", "1"), ("y", "22")])
    assert lines == ["A     LONG", "xxxx  1", "y     22"]
