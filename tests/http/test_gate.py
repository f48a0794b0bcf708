"""The request gate on a plain app: 413 before reading, strict JSON, errors per router prefix, a client
leaving cancels its call, every client answered at the end of the grace period."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from blazerpc import BlazeError, Status
from tests.apps import Probe, make_app
from tests.conftest import serving


async def raw_post(port: int, headers: str) -> bytes:
    """Send only a request head (the body never comes) and read the answer to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    finally:
        writer.close()


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent() -> None:
    async with serving(make_app(), grpc_port=None, max_body_mb=1) as server:
        reply = await raw_post(server.http_port, "Content-Length: 5000000\r\n")  # and no body at all
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
        assert b"larger than 1048576 bytes" in body
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:

            async def parts() -> AsyncIterator[bytes]:
                for part in (b'{"text": "', b"x" * 2**20, b'"}'):
                    yield part

            chunked = await http.post("/echo", content=parts())
            assert chunked.status_code == 413 and chunked.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert (await http.post("/echo", json={"text": "still here"})).json() == {"result": "still here"}


async def test_routers_get_errors_in_their_own_shape_under_their_prefix() -> None:
    app = make_app()
    router = APIRouter(prefix="/custom")

    @router.post("/thing")
    async def thing(n: int) -> dict[str, int]:
        raise BlazeError(Status.RESOURCE_EXHAUSTED, "busy", retry_after=3)

    app.include_router(router, error_body=lambda e: {"oops": e.message, "param": e.param})
    async with (
        serving(app, grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        busy = await http.post("/custom/thing?n=1")
        assert busy.status_code == 429 and busy.json() == {"oops": "busy", "param": None}
        assert busy.headers["retry-after"] == "3"
        invalid = await http.post("/custom/thing?n=" + "x" * 10_000)
        assert invalid.status_code == 422 and invalid.json()["param"] == "n" and len(invalid.content) < 1000
        other = await http.post("/echo", json={"text": 5})  # the models' routes keep FastAPI's shape
        assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["body", "text"]


class RawConnection:
    """One keep-alive HTTP/1.1 connection, written by hand, to see what a client's socket sees."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await asyncio.wait_for(self.reader.readline(), 10)
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def test_nan_infinity_and_lone_surrogates_are_422_and_the_connection_stays_open() -> None:
    async with serving(make_app(), grpc_port=None) as server:
        connection = await RawConnection.open(server.http_port)
        try:
            for body, says in [
                (b'{"a": NaN}', b"NaN is not a JSON number"),
                (b'{"a": 1, "b": -Infinity}', b"Infinity is not a JSON number"),
                (b'{"a": 1e400}', b"1e400 is beyond the float64 range"),
                (b'{"a": ' + b"9" * 5000 + b"}", b"an integer of more than 4300 digits"),
                (b'{"text": "\\ud800"}', b"lone UTF-16 surrogate"),
            ]:
                status, answer = await connection.post("/add", body)
                assert status == 422 and says in answer, answer
            status, answer = await connection.post("/echo", b'{"text": "NaN \\\\ud800 \\ud83d\\ude00"}')
            assert status == 200 and json.loads(answer) == {"result": "NaN \\ud800 \U0001f600"}
        finally:
            connection.close()


async def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_open() -> None:
    async with serving(make_app(), grpc_port=None) as server:
        connection = await RawConnection.open(server.http_port)
        try:
            status, answer = await connection.post("/square", b'{"x": 1e200}')  # inf: not JSON
            assert status == 500 and json.loads(answer)["error"]["status"] == "INTERNAL"
            status, answer = await connection.post("/square", b'{"x": 3}')
            assert status == 200 and json.loads(answer) == {"result": 9.0}
        finally:
            connection.close()


async def test_a_client_that_leaves_cancels_its_non_streaming_call() -> None:
    probe = Probe()
    async with serving(make_app(probe), grpc_port=None) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=0.5) as http:
            left = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/sleep", json={"seconds": 60})
        for _ in range(100):
            if "sleep" in probe.finished:
                break
            await asyncio.sleep(0.05)
        assert probe.finished["sleep"] - left < 3
        assert server.lifecycle.active == 0


async def test_the_end_of_the_grace_period_answers_every_http_client() -> None:
    async with serving(make_app(), grpc_port=None) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as http:

            async def stream() -> list[str]:
                body = {"prompt": "p", "n": 1000, "delay": 0.05, "stream": True}
                async with http.stream("POST", "/generate", json=body) as answer:
                    assert answer.status_code == 200
                    return [line async for line in answer.aiter_lines() if line]

            streaming = asyncio.create_task(stream())
            unary = asyncio.create_task(http.post("/sleep", json={"seconds": 60}))
            while server.lifecycle.active < 2:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            await server.stop(grace_period=0.3)
            events, answer = await streaming, await unary
        assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["error"]["status"] == "UNAVAILABLE"
        assert json.loads(events[0][6:])["token"] == "p0"
        assert answer.status_code == 503 and answer.json()["error"]["message"].startswith("server shut down")
