"""Each queue's whole settings (hold music, announcements, callback key, recording), as the
hold loops and the dialers read them.

The routing part of a queue lives in the ACD's queue hash for the Lua scripts; the rest is
stored beside it (field `settings`), written by the API and by `config.yaml` at start (the
file wins for what it names, as for routing). The hold loops ask for a queue's settings
on every turn, so each process keeps what it read for a moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

import redis
from pydantic import ValidationError

from acd.keys import Keys
from kokan.config import QueueSettings, Settings

SETTINGS_FIELD = "settings"
"""In the queue's hash: the whole QueueSettings as JSON."""
CACHE_S = 2.0
"""How long a process reuses a queue's settings: a hold-loop turn reads them per caller,
and an admin's change reaches every caller within this."""

log = logging.getLogger(__name__)


class StoredQueues(Mapping[str, QueueSettings]):
    """Queue name -> its settings: what the API or the file stored in Redis, else the
    file's (Redis away, or a queue stored before its settings were)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, fallback: Mapping[str, QueueSettings]
    ) -> None:
        self.client = client
        self.acd_keys = keys
        self.fallback = fallback
        self._cache: dict[str, tuple[float, QueueSettings | None]] = {}

    def __getitem__(self, name: str) -> QueueSettings:
        found = self._read(name)
        if found is None:
            raise KeyError(name)
        return found

    def _read(self, name: str) -> QueueSettings | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        try:
            raw = self.client.hget(self.acd_keys.queue(name), SETTINGS_FIELD)
            found = QueueSettings.model_validate_json(raw) if raw else self.fallback.get(name)
        except (redis.RedisError, ValidationError):
            log.warning("queue %s: stored settings unreadable; using config.yaml's", name)
            found = self.fallback.get(name)
        self._cache[name] = (now, found)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.fallback)

    def __len__(self) -> int:
        return len(self.fallback)


def hold_music_problem(settings: Settings, source: str) -> str | None:
    """Why the hold music cannot be played, or None. A missing file would make Twilio skip
    the music and come straight back: a hold loop spinning on the web workers."""
    if source.startswith(("http://", "https://")):
        return None
    path = (settings.flows_dir / source).resolve()
    if not path.is_relative_to(settings.flows_dir.resolve()) or not path.is_file():
        return f"no audio file {source!r} under {settings.flows_dir}"
    return None
