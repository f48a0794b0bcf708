"""Batched models through gRPC and HTTP: the same batches, the same errors."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from blazerpc import BlazeApp, BlazeClient, BlazeError, Status
from examples import iris
from tests.conftest import serving


async def test_iris_example_batches_grpc_and_http_callers_together() -> None:
    iris.calls = 0
    rows = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    async with (
        serving(iris.app) as server,
        BlazeClient("127.0.0.1", server.grpc_port) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        grpc_calls = [client.predict("iris", features=rows[i : i + 1]) for i in range(20)]
        http_calls = [http.post("/iris", json={"features": rows[i : i + 2].tolist()}) for i in range(20, 40, 2)]
        results = await asyncio.gather(*grpc_calls, *http_calls)
        stats = server.batchers["iris"].stats
        models = (await http.get("/models")).json()["models"]
    logits = rows @ iris.WEIGHTS
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for i, got in enumerate(results[:20]):
        np.testing.assert_allclose(got, probs[i : i + 1], rtol=1e-5)
    for j, reply in enumerate(results[20:]):
        body = reply.json()["result"]
        assert body["shape"] == [2, 3]
        np.testing.assert_allclose(body["data"], probs[20 + 2 * j : 22 + 2 * j], rtol=1e-5)
    assert stats.requests == 30 and iris.calls == stats.batches < 30
    assert {"name": "iris", "version": "1", "streaming": False, "batched": True} in models


async def test_overflow_is_429_over_http_and_resource_exhausted_over_grpc() -> None:
    app = BlazeApp()
    release = asyncio.Event()

    @app.model("slow", batching=True, max_batch_size=1, max_queue_size=2, batch_timeout_ms=0)
    async def slow(x: int) -> int:
        await release.wait()
        return [v * 10 for v in x]  # type: ignore[attr-defined, return-value]

    async with (
        serving(app) as server,
        BlazeClient("127.0.0.1", server.grpc_port) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        first = asyncio.create_task(client.predict("slow", x=1))  # runs, blocked on `release`
        await asyncio.sleep(0.1)
        queued = [asyncio.create_task(client.predict("slow", x=i)) for i in (2, 3)]
        await asyncio.sleep(0.1)
        reply = await http.post("/slow", json={"x": 4})
        assert reply.status_code == 429
        assert "queue of model 'slow' is full" in reply.json()["error"]["message"]
        try:
            await client.predict("slow", x=5)
        except BlazeError as exc:
            assert exc.status == Status.RESOURCE_EXHAUSTED
        else:
            raise AssertionError("expected RESOURCE_EXHAUSTED")
        release.set()
        assert await asyncio.gather(first, *queued) == [10, 20, 30]


async def test_deadline_while_queued_drops_the_request_before_it_runs() -> None:
    app = BlazeApp()
    seen: list[int] = []
    release = asyncio.Event()

    @app.model("slow", batching=True, max_batch_size=1, batch_timeout_ms=0)
    async def slow(x: int) -> int:
        seen.extend(x)  # type: ignore[arg-type]
        await release.wait()
        return x

    async with serving(app) as server, BlazeClient("127.0.0.1", server.grpc_port) as client:
        first = asyncio.create_task(client.predict("slow", x=1))
        await asyncio.sleep(0.1)
        try:
            await client.with_timeout(0.2).predict("slow", x=2)
        except BlazeError as exc:
            assert exc.status == Status.DEADLINE_EXCEEDED
        else:
            raise AssertionError("expected DEADLINE_EXCEEDED")
        release.set()
        assert await first == 1
        await asyncio.sleep(0.05)
        assert seen == [1]  # the request that timed out in the queue never ran
        assert server.batchers["slow"].stats.dropped == 1
