"""Open connections of both transports, within what the process can hold and for as long as they do work.

Every socket costs a file descriptor, and at the process's limit (``ulimit -n``) nothing can be
accepted, ``/health`` included. So connections share one budget, below that limit. A new one
over budget displaces the connection idle the longest (no request in flight: a fresh socket
that sent nothing, a request head still arriving, a kept-alive connection between requests),
as nginx reuses idle keep-alive connections; only when every connection is busy is the new one
refused. Connections idle past their transport's timeout are closed: for HTTP that also bounds
how long a request's head may take to arrive, so a client sending headers a byte at a time
(slowloris) holds a socket for at most ``idle_timeout_s``.

The budget can only act on a connection asyncio has accepted, and asyncio accepts up to the
listen backlog (2048) sockets per readiness event before any of them reaches the budget: 300
sockets opened at once against ``ulimit -n 256`` went past the limit, asyncio paused the
listener for a second and logged a traceback per failed accept (2,000 per event; with stdout a
pipe nobody read, the server blocked on it for good). So both transports listen on a
``BudgetedListener``, which accepts at most ``ACCEPT_BURST`` sockets the budget has not yet seen.

With TLS, asyncio tells a connection's protocol only once the handshake is done (it may take
60 s to give up on a client that sends nothing), so the budget counts each socket from accept
on as a ``Handshake``: idle, displaced first, closed after the transport's idle timeout. The
connection takes its place when the handshake completes. The budget closes a TLS connection by
shutting its socket down: a TLS close would keep the descriptor until the client answers with
its own close_notify, for up to 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from collections import deque
from typing import Any, Protocol

log = logging.getLogger("blazerpc")

# Sockets accepted but not yet admitted. asyncio runs a socket's connection_made (the admission) two
# loop iterations after accepting it, and a connection it displaces closes one iteration later, so
# at most 2 * ACCEPT_BURST sockets are open outside the budget.
ACCEPT_BURST = 16
# Those, and the process's own descriptors (stdio, epoll, the listeners, the engine's pipes, logs:
# 9 for `blaze serve`, 14 for `blaze llm`).
RESERVED_FDS = 32 + 2 * ACCEPT_BURST
LISTEN_BACKLOG = 2048  # the kernel's queue: a burst waits there, not in SYN retransmits
STALE_ACCEPT_S = 1.0  # an accepted socket not admitted by then never will be (asyncio dropped it)


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


class Handshake:
    """A TLS connection accepted and not yet through its handshake, as the budget counts it."""

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        self.sock = sock
        self.idle_timeout_s = idle_timeout_s

    def busy(self) -> bool:
        return False

    def close(self) -> None:
        _shut_down(self.sock)

    def gone(self) -> bool:
        """asyncio closed it: the handshake failed or took too long."""
        return self.sock.fileno() < 0


class ConnectionBudget:
    """The open connections of every transport: admitted within ``limit``, closed when idle too long."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle_since: dict[Connection, float] = {}  # insertion order: oldest first
        self.busy: set[Connection] = set()
        self.handshakes: dict[int, Handshake] = {}  # by file descriptor
        self.tls_sockets: dict[Connection, Any] = {}  # each TLS connection's TCP socket, to shut it down
        self.accepting: deque[float] = deque()  # when each socket accepted but not yet admitted was accepted
        self._warned_out_of_files = -60.0
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.idle_since) + len(self.busy)

    def admit(self, connection: Connection, transport: asyncio.BaseTransport | None = None) -> bool:
        """Count a new connection, displacing the longest-idle one if the budget is spent; False if all are busy.

        Over TLS (``transport`` says so), the connection takes the place its ``Handshake`` held."""
        sock = transport.get_extra_info("socket") if transport and transport.get_extra_info("sslcontext") else None
        handshake = self.handshakes.pop(sock.fileno(), None) if sock is not None else None
        if handshake is not None:
            self.release(handshake)
        elif self.accepting:
            self.accepting.popleft()
        self._refresh(time.monotonic())
        if len(self) >= self.limit and not self._close_longest_idle():
            log.warning("refused a connection: all %d are busy (--max-connections)", self.limit)
            return False
        self.idle_since[connection] = time.monotonic()
        if sock is not None:
            self.tls_sockets[connection] = sock
        self._start_sweeping()
        return True

    def admit_handshake(self, sock: socket.socket, idle_timeout_s: float) -> None:
        """Count a TLS connection from accept on, its handshake still to come."""
        fd = sock.fileno()
        stale = self.handshakes.pop(fd, None)  # a closed socket's: its descriptor was reused
        if stale is not None:
            self.release(stale)
        handshake = Handshake(sock, idle_timeout_s)
        if self.admit(handshake):
            self.handshakes[fd] = handshake
        else:
            handshake.close()

    def may_accept(self) -> bool:
        """Fewer than ``ACCEPT_BURST`` sockets are accepted and not yet admitted."""
        stale = time.monotonic() - STALE_ACCEPT_S
        while self.accepting and self.accepting[0] < stale:
            self.accepting.popleft()
        return len(self.accepting) < ACCEPT_BURST

    def accepted(self) -> None:
        self.accepting.append(time.monotonic())

    def out_of_files(self) -> bool:
        """accept() failed for want of a file descriptor: close the longest-idle connection; False if none is idle.

        This happens only when something besides connections holds more than ``RESERVED_FDS``.
        """
        now = time.monotonic()
        self._refresh(now)
        if now - self._warned_out_of_files >= 60:
            self._warned_out_of_files = now
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning(
                "out of file descriptors (ulimit -n %d) with %d connections open, %d of them idle: %s; "
                "raise ulimit -n or lower --max-connections",
                soft,
                len(self),
                len(self.idle_since),
                "closing idle ones for new ones" if self.idle_since else "not accepting for a second",
            )
        return self._close_longest_idle()

    def _close_longest_idle(self) -> bool:
        if not self.idle_since:
            return False
        self._close(min(self.idle_since, key=self.idle_since.__getitem__))
        return True

    def _close(self, connection: Connection) -> None:
        sock = self.tls_sockets.get(connection)
        self.release(connection)
        if sock is None:
            connection.close()
        else:
            _shut_down(sock)

    def release(self, connection: Connection) -> None:
        self.idle_since.pop(connection, None)
        self.busy.discard(connection)
        self.tls_sockets.pop(connection, None)

    def sweep(self) -> None:
        """Close every connection idle for longer than its timeout."""
        now = time.monotonic()
        self._refresh(now)
        for connection, since in list(self.idle_since.items()):
            if now - since > connection.idle_timeout_s:
                self._close(connection)

    def _refresh(self, now: float) -> None:
        for fd, handshake in [(fd, h) for fd, h in self.handshakes.items() if h.gone()]:
            del self.handshakes[fd]
            self.release(handshake)
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
        for handshake in self.handshakes.values():
            handshake.close()


class BudgetedListener(socket.socket):
    """A listening socket that accepts only what ``budget`` can absorb.

    asyncio calls ``accept()`` in a loop per readiness event; raising ``BlockingIOError`` ends
    that loop as an empty queue would, and the connections wait in the kernel's queue until
    the budget has admitted the ones before them (two loop iterations).
    """

    def __init__(self, family: int, budget: ConnectionBudget, handshake_timeout_s: float | None = None) -> None:
        # IPPROTO_TCP, not 0 (accepted sockets inherit it): asyncio only turns on TCP_NODELAY for
        # sockets that say they are TCP, and without it Nagle's algorithm adds ~40 ms to small responses.
        super().__init__(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.budget = budget
        self.handshake_timeout_s = handshake_timeout_s  # TLS: how long a handshake may take
        self.pausing = False
        logging.getLogger("asyncio").addFilter(_not_asyncio_out_of_files)

    def accept(self) -> tuple[socket.socket, Any]:
        if self.pausing or not self.budget.may_accept():
            raise BlockingIOError(errno.EAGAIN, "the connection budget has not caught up")
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            if self.budget.out_of_files():
                # The idle connection's descriptor is free on the next loop iteration: accept then.
                raise BlockingIOError(errno.EAGAIN, "closing an idle connection to make room") from exc
            # asyncio pauses this listener for a second; the rest of its accept loop would fail
            # the same way, each failure logged with a traceback.
            self.pausing = True
            asyncio.get_running_loop().call_soon(self._unpause)
            raise
        self.budget.accepted()
        if self.handshake_timeout_s is not None:  # admitted as asyncio would a plain connection: soon, not now
            asyncio.get_running_loop().call_soon(self.budget.admit_handshake, accepted[0], self.handshake_timeout_s)
        return accepted

    def _unpause(self) -> None:
        self.pausing = False


def _shut_down(sock: Any) -> None:
    """End a connection asyncio owns without closing its descriptor under it: the transport reads EOF and closes."""
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _not_asyncio_out_of_files(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("socket.accept() out of system resource")  # out_of_files() said it


def listening_socket(
    host: str, port: int, budget: ConnectionBudget, reuse_port: bool = False, handshake_timeout_s: float | None = None
) -> BudgetedListener:
    """A bound, listening, non-blocking socket for a transport, its accepts within ``budget``;
    with ``handshake_timeout_s``, for TLS connections, each counted from accept on."""
    sock = BudgetedListener(socket.AF_INET6 if ":" in host else socket.AF_INET, budget, handshake_timeout_s)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
