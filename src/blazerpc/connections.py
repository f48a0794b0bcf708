"""Open connections of both transports, within what the process can hold and for as long as they do work.

Every socket costs a file descriptor, and at the process's limit (``ulimit -n``) nothing can be
accepted, ``/health`` included. So connections share one budget, below that limit. A new one
over budget displaces the connection idle the longest (no request in flight: a fresh socket
that sent nothing, a request head still arriving, a kept-alive connection between requests),
as nginx reuses idle keep-alive connections; only when every connection is busy is the new one
refused. Connections idle past their transport's timeout are closed: for HTTP that also bounds
how long a request's head may take to arrive, so a client sending headers a byte at a time
(slowloris) holds a socket for at most ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Protocol

log = logging.getLogger("blazerpc")

RESERVED_FDS = 64  # for the listeners, the engine's pipes, log files and libraries


class Connection(Protocol):
    idle_timeout_s: float

    def busy(self) -> bool:
        """A request (HTTP) or a stream (gRPC) is in flight."""
        ...

    def close(self) -> None: ...


def default_max_connections() -> int:
    """What the open-file limit leaves once ``RESERVED_FDS`` are set aside."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, soft - RESERVED_FDS)


class ConnectionBudget:
    """The open connections of every transport: admitted within ``limit``, closed when idle too long."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle_since: dict[Connection, float] = {}  # insertion order: oldest first
        self.busy: set[Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.idle_since) + len(self.busy)

    def admit(self, connection: Connection) -> bool:
        """Count a new connection, displacing the longest-idle one if the budget is spent; False if all are busy."""
        self._refresh(time.monotonic())
        if len(self) >= self.limit:
            if not self.idle_since:
                log.warning("refused a connection: all %d are busy (--max-connections)", self.limit)
                return False
            oldest = min(self.idle_since, key=self.idle_since.__getitem__)
            self.release(oldest)
            oldest.close()
        self.idle_since[connection] = time.monotonic()
        self._start_sweeping()
        return True

    def release(self, connection: Connection) -> None:
        self.idle_since.pop(connection, None)
        self.busy.discard(connection)

    def sweep(self) -> None:
        """Close every connection idle for longer than its timeout."""
        now = time.monotonic()
        self._refresh(now)
        for connection, since in list(self.idle_since.items()):
            if now - since > connection.idle_timeout_s:
                self.release(connection)
                connection.close()

    def _refresh(self, now: float) -> None:
        for connection in [c for c in self.idle_since if c.busy()]:
            del self.idle_since[connection]
            self.busy.add(connection)
        for connection in [c for c in self.busy if not c.busy()]:
            self.busy.discard(connection)
            self.idle_since[connection] = now

    def _start_sweeping(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while len(self):
            await asyncio.sleep(0.5)
            self.sweep()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
