"""A job that proves a worker is alive and can import Kokan: `kokan worker --check` enqueues it."""

from __future__ import annotations

import os
import socket
from typing import Any

SELFCHECK_RESULT_TTL_S = 60
"""The caller reads the result within seconds; nothing else needs it afterwards."""


def selfcheck(token: str) -> dict[str, Any]:
    return {"token": token, "pid": os.getpid(), "host": socket.gethostname()}
