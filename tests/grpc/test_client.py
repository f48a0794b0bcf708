from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import pytest

from blazerpc import BlazeClient
from tests.apps import Probe, make_app
from tests.conftest import serving, until


async def test_client_without_registry_learns_the_schema_by_reflection() -> None:
    app = make_app()
    async with serving(app, http_port=None) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:
        assert await client.predict("echo", text="a", times=2) == "aa"
        assert await client.predict("add", a=5) == 15
        x = np.ones((3, 4), np.float32)
        np.testing.assert_array_equal(await client.predict("scale", x=x), x * 2)
        assert await client.predict("describe", values=[4, 5]) == {"token": "none", "token_id": 9}
        chunks = [c async for c in client.stream("generate", prompt="p", n=3)]
        assert chunks == [{"token": f"p{i}", "token_id": i} for i in range(3)]


@pytest.mark.parametrize("how", ["async_with", "aclose"])
async def test_closing_a_stream_cancels_it_on_the_server(how: str) -> None:
    probe = Probe()
    app = make_app(probe)
    async with serving(app, http_port=None) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:
        if how == "async_with":
            async with client.stream("generate", prompt="x", n=100_000, delay=0.01) as chunks:
                first = await chunks.__anext__()
        else:
            chunks = client.stream("generate", prompt="x", n=100_000, delay=0.01)
            first = await chunks.__anext__()
            await chunks.aclose()
        closed = time.monotonic()
        assert first["token"] == "x0"
        await until(lambda: "generate" in probe.finished, timeout=2)
        assert probe.finished["generate"] - closed < 1.0  # an order of magnitude: ~1,000 s were left
        assert await client.predict("echo", text="ok") == "ok"


async def test_bare_break_cancels_when_the_stream_is_finalized() -> None:
    probe = Probe()
    app = make_app(probe)
    async with serving(app, http_port=None) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:
        async for _ in client.stream("generate", prompt="x", n=100_000, delay=0.01):
            break
        gc.collect()  # CPython finalizes it at once; the collect makes that explicit
        await until(lambda: "generate" in probe.finished, timeout=2)


async def test_many_concurrent_streams_share_one_connection() -> None:
    app = make_app()
    async with serving(app, http_port=None) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:

        async def one(i: int) -> list[str]:
            return [c["token"] async for c in client.stream("generate", prompt=f"{i}-", n=20)]

        results = await asyncio.gather(*(one(i) for i in range(32)))
    assert all(r == [f"{i}-{j}" for j in range(20)] for i, r in enumerate(results))
