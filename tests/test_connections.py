"""The connection budget: admission, displacing the longest-idle connection, idle timeouts, accept bursts."""

from __future__ import annotations

import asyncio
import resource
import socket

import httpx
import pytest
from grpclib.health.v1.health_pb2 import HealthCheckResponse

from blazerpc.connections import (
    ACCEPT_BURST,
    RESERVED_FDS,
    STALE_ACCEPT_S,
    ConnectionBudget,
    default_max_connections,
    listening_socket,
)
from tests.conftest import blaze, free_port, grpc_health, wait_http_ready


class Socketish:
    """A connection as the budget sees one: busy or not, and closable."""

    def __init__(self, name: str, idle_timeout_s: float = 60.0) -> None:
        self.name, self.idle_timeout_s = name, idle_timeout_s
        self.in_flight = False
        self.closed = False

    def busy(self) -> bool:
        return self.in_flight

    def close(self) -> None:
        self.closed = True


async def test_over_budget_the_longest_idle_connection_makes_room() -> None:
    budget = ConnectionBudget(limit=3)
    a, b, c, d = (Socketish(n) for n in "abcd")
    for connection in (a, b, c):
        assert budget.admit(connection)
        await asyncio.sleep(0.01)
    a.in_flight = True  # a is the oldest, but busy: b goes
    assert budget.admit(d) and b.closed and not a.closed and len(budget) == 3
    budget.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    budget = ConnectionBudget(limit=2)
    a, b = Socketish("a"), Socketish("b")
    assert budget.admit(a) and budget.admit(b)
    a.in_flight = b.in_flight = True
    assert not budget.admit(Socketish("c"))
    b.in_flight = False
    assert budget.admit(Socketish("d")) and b.closed
    budget.close()


async def test_idle_connections_are_closed_after_their_timeout_and_busy_ones_never() -> None:
    budget = ConnectionBudget(limit=10)
    quick, slow, working = Socketish("quick", 0.2), Socketish("slow", 60), Socketish("working", 0.2)
    working.in_flight = True
    for connection in (quick, slow, working):
        budget.admit(connection)
    await asyncio.sleep(1.2)
    assert quick.closed and not slow.closed and not working.closed
    working.in_flight = False  # idle from the next sweep on
    await asyncio.sleep(1.2)
    assert working.closed and len(budget) == 1
    budget.release(slow)
    await asyncio.sleep(0.6)  # nothing left: the sweeper stops
    assert budget._sweeper is not None and budget._sweeper.done()


async def test_a_handshake_counts_until_asyncio_closes_its_socket_and_is_shut_down_when_idle() -> None:
    budget = ConnectionBudget(limit=10)
    server_side, client_side = socket.socketpair()
    budget.admit_handshake(server_side, idle_timeout_s=60)
    assert len(budget) == 1 and budget.handshakes
    server_side.close()  # what asyncio does when a handshake fails
    budget.sweep()
    assert len(budget) == 0 and not budget.handshakes
    client_side.close()
    server_side, client_side = socket.socketpair()
    budget.admit_handshake(server_side, idle_timeout_s=0.2)
    await asyncio.sleep(1.2)
    assert len(budget) == 0 and client_side.recv(1) == b""  # shut down, its descriptor left to asyncio
    assert server_side.fileno() >= 0
    for sock in (server_side, client_side):
        sock.close()
    budget.close()


def test_the_default_budget_leaves_file_descriptors_for_everything_else() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == max(16, soft - RESERVED_FDS)


async def test_a_listener_accepts_no_more_than_a_burst_the_budget_has_not_admitted() -> None:
    budget = ConnectionBudget(limit=100)
    listener = listening_socket("127.0.0.1", 0, budget)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(ACCEPT_BURST + 1)]
    listener.setblocking(True)  # so a BlockingIOError can only come from the budget
    accepted = [listener.accept()[0] for _ in range(ACCEPT_BURST)]
    with pytest.raises(BlockingIOError):
        listener.accept()
    budget.admit(Socketish("first"))
    accepted.append(listener.accept()[0])
    budget.accepting[0] -= STALE_ACCEPT_S  # asyncio never made a connection of it
    assert budget.may_accept() and len(budget.accepting) == ACCEPT_BURST - 1
    for sock in (*clients, *accepted, listener):
        sock.close()
    budget.close()


@pytest.mark.parametrize("max_connections", ["0", "1000"])
def test_a_server_under_a_low_file_limit_keeps_answering_past_it(max_connections: str, process_cleanup: list) -> None:
    """300 idle sockets opened at once against ``ulimit -n 256``. With the default budget, accept
    never runs out of descriptors; with one the process cannot hold (1000), idle connections make
    room when it does, with one warning. Before, asyncio accepted 2,048 sockets per event, paused
    for a second and logged a traceback per failed accept, and health stopped answering."""
    http_port, grpc_port = free_port(), free_port()

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    ports = ("--http-port", str(http_port), "--port", str(grpc_port))
    server = blaze("serve", "tests.apps:app", "--host", "127.0.0.1", *ports, "--max-connections", max_connections,
                   preexec_fn=low_file_limit)  # fmt: skip
    process_cleanup.append(server)
    wait_http_ready(http_port)
    idle = [socket.create_connection(("127.0.0.1", port)) for port in (http_port, grpc_port) * 150]
    try:
        for _ in range(3):  # each within 5 s; asyncio's pause after a failed accept alone was 1 s
            assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5).status_code == 200
            assert asyncio.run(grpc_health(grpc_port)) == HealthCheckResponse.SERVING
    finally:
        for sock in idle:
            sock.close()
    server.terminate()
    output, _ = server.communicate(timeout=10)
    assert "Traceback" not in output and "out of system resource" not in output
    assert output.count("out of file descriptors") == (0 if max_connections == "0" else 1)
