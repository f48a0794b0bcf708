"""HTTP connections: the budget, idle and body timeouts, the request-head limit, on a real server."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.apps import make_app
from tests.conftest import serving


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it kept it open."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return None


async def test_idle_sockets_and_slow_heads_are_closed_after_the_idle_timeout() -> None:
    async with serving(make_app(), grpc_port=None, idle_timeout_s=0.5) as server:
        silent = await asyncio.open_connection("127.0.0.1", server.http_port)
        slow = await asyncio.open_connection("127.0.0.1", server.http_port)
        start = time.monotonic()

        async def drip() -> None:  # slowloris: a header byte every 100 ms, never the end
            for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                slow[1].write(bytes([byte]))
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        assert await closed_within(silent[0], 5) == b""
        assert await closed_within(slow[0], 5) == b""
        assert time.monotonic() - start < 3
        dripping.cancel()
        silent[1].close()
        slow[1].close()


async def test_over_the_connection_budget_idle_connections_make_room_and_health_answers() -> None:
    async with serving(make_app(), grpc_port=None, max_connections=20) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(40)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            assert (await http.get("/health")).status_code == 200
        assert len(server.connections) <= 20
        closed = [await closed_within(reader, 0.2) for reader, _ in idle]
        assert closed[:20].count(b"") >= 20 and closed[-5:] == [None] * 5  # the oldest went
        for _, writer in idle:
            writer.close()


async def test_when_every_connection_is_busy_a_new_one_gets_503() -> None:
    async with (
        serving(make_app(), grpc_port=None, max_connections=2) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as http,
    ):
        sleeping = [asyncio.create_task(http.post("/sleep", json={"seconds": 1.5})) for _ in range(2)]
        while server.lifecycle.active < 2:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        refused = await closed_within(reader, 5)
        assert refused is not None and refused.startswith(b"HTTP/1.1 503")
        assert json.loads(refused.partition(b"\r\n\r\n")[2])["error"]["message"] == "too many open connections"
        writer.close()
        assert [r.status_code for r in await asyncio.gather(*sleeping)] == [200, 200]


async def test_a_request_head_over_the_limit_gets_431_and_the_server_holds_no_more_of_it() -> None:
    async with serving(make_app(), grpc_port=None, max_head_kb=8) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 64 * 1024)
        answer = await closed_within(reader, 5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 431")
        assert b"larger than 8192 bytes" in answer
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            big_but_allowed = await http.get("/health", headers={"X-Fine": "b" * 6000})
            assert big_but_allowed.status_code == 200


async def test_a_body_that_stops_coming_gets_408() -> None:
    async with serving(make_app(), grpc_port=None, body_timeout_s=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        writer.write(head.encode() + b'{"text": ')
        answer = await closed_within(reader, 5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408")
        assert b"nothing came for 0.5 s" in answer and server.lifecycle.active == 0
        writer.close()
