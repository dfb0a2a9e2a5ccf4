"""A few Redis commands written at once and answered at once, on a connection each thread
keeps: the IVR's one round trip per webhook.

redis-py's Pipeline does the same on the wire, but every execute also takes a connection
from the pool (a lock, a pid check and a poll of the socket), wraps the send in retry
closures and records observability data: on the voice webhook that bookkeeping cost more
instructions than the engine's turn. This keeps redis-py's own connection and reply
parsing and hiredis's packing, and drops the rest.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence

import hiredis
import redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError, DataError, ResponseError

ATTEMPTS = 2
"""A kept connection found broken (Redis restarted, the socket closed while idle) is
reconnected and the commands sent once more; a second failure means Redis is away, and the
caller hears it (the web app answers 503 with Retry-After)."""

Command = Sequence[str | bytes | int | float]


def _packed(commands: Sequence[Command]) -> list[bytes]:
    """The commands in Redis's protocol, by hiredis: the packer redis-py itself uses when
    hiredis is installed, without redis-py's pass over every argument in Python first."""
    try:
        # hiredis's stub types a command as a 1-tuple; it takes any length
        return [b"".join([hiredis.pack_command(tuple(c)) for c in commands])]  # type: ignore[arg-type]
    except TypeError as error:  # an argument that is not text, bytes or a number
        raise DataError(f"cannot send {error}") from error


class _KeptConnection:
    """A thread's connection from the pool. The thread's entry in a threading.local goes
    when the thread ends, and with it this holder, which then gives the connection back."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pid = os.getpid()
        self.connection: AbstractConnection = pool.get_connection()
        weakref.finalize(self, pool.release, self.connection)


class RoundTrip:
    """Send commands to `client`'s server in one write and read their replies in one go."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self._kept = threading.local()

    def _connection(self) -> AbstractConnection:
        """This thread's connection, taken from the pool once and kept; a forked child takes
        its own instead of sharing its parent's socket."""
        kept: _KeptConnection | None = getattr(self._kept, "holder", None)
        if kept is None or kept.pid != os.getpid():
            kept = self._kept.holder = _KeptConnection(self.pool)
        return kept.connection

    def send(self, commands: Sequence[Command]) -> list[object]:
        """The replies, in order. A command Redis refused gives its ResponseError in its
        place (every reply is read, so the connection stays in step); the caller decides."""
        packed = _packed(commands)
        for attempt in range(1, ATTEMPTS + 1):
            connection = self._connection()
            try:
                connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
                replies: list[object] = []
                for _command in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as refused:
                        replies.append(refused)
                return replies
            except ConnectionError:
                connection.disconnect()  # type: ignore[no-untyped-call]  # reconnects on send
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
