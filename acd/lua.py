"""Loads the ACD's Lua scripts: constants header + shared library + the script's body.

The header is generated from `acd.keys`, `acd.limits` and `acd.events`, so a key
suffix, a bound or the stream length is written once, in Python, with its reason.
Scripts run by EVALSHA; redis-py loads a script again by itself when Redis answers
NOSCRIPT (after a restart or a failover), so a restarted Redis needs nothing from us.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from acd.events import EVENT_STREAM_MAXLEN
from acd.keys import CALL_TTL_S, ENDED_CALL_TTL_S, LUA_SUFFIXES
from acd.limits import LUA_CONSTANTS
from acd.schemas import CHANNELS

LIBRARY = "lib.lua"
SCRIPT_NAMES = (
    "put_queue",
    "put_agent",
    "remove_agent",
    "set_status",
    "join",
    "route",
    "answer",
    "no_answer",
    "hangup",
    "callback",
    "sweep",
)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "'" in value or "\\" in value:
            raise ValueError(f"unexpected quote in Lua constant {value!r}")
        return f"'{value}'"
    if isinstance(value, Sequence):
        return "{" + ", ".join(_literal(item) for item in value) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def header(constants: Mapping[str, object]) -> str:
    return "".join(f"local {name} = {_literal(value)}\n" for name, value in constants.items())


def constants() -> dict[str, object]:
    return {
        **LUA_SUFFIXES,
        **LUA_CONSTANTS,
        "CHANNELS": [str(channel) for channel in CHANNELS],
        "EVENT_MAXLEN": EVENT_STREAM_MAXLEN,
        "CALL_TTL_S": CALL_TTL_S,
        "ENDED_CALL_TTL_S": ENDED_CALL_TTL_S,
    }


_FUNCTION = re.compile(r"^local function (\w+)\(", re.MULTILINE)


def shake(library: str, body: str) -> str:
    """The library with only the functions `body` uses, directly or through each other.
    Each run of a script builds every local function of its text again, which costs
    more than many of the Redis commands it then runs."""
    starts = [(match.start(), match.group(1)) for match in _FUNCTION.finditer(library)]
    if not starts:
        return library
    blocks = {
        name: library[start : starts[i + 1][0] if i + 1 < len(starts) else len(library)]
        for i, (start, name) in enumerate(starts)
    }
    needed: set[str] = set()
    pending = [body]
    while pending:
        text = pending.pop()
        for name, block in blocks.items():
            if name not in needed and re.search(rf"\b{name}\b", text):
                needed.add(name)
                pending.append(block)
    preamble = library[: starts[0][0]]
    return preamble + "".join(block for name, block in blocks.items() if name in needed)


def _read(name: str) -> str:
    return resources.files("acd").joinpath("scripts", name).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The full text Redis runs for one script."""
    body = _read(f"{name}.lua")
    library = shake(_read(LIBRARY), body)
    return "\n".join((header(constants()), library, f"-- {name}.lua", body))


@dataclass(frozen=True)
class Scripts:
    put_queue: Script
    put_agent: Script
    remove_agent: Script
    set_status: Script
    join: Script
    route: Script
    answer: Script
    no_answer: Script
    hangup: Script
    callback: Script
    sweep: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in SCRIPT_NAMES})
