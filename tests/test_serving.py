"""Startup hooks, readiness and graceful shutdown, seen through real gRPC and HTTP clients."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from blazerpc import BlazeApp, BlazeClient, BlazeError, BlazeServer, ServeConfig, Status
from tests.apps import make_app


async def health(port: int, service: str = "blazerpc.InferenceService", channel: Channel | None = None) -> int:
    """The gRPC health status; pass ``channel`` to ask over a connection that is already open."""
    own = channel is None
    channel = channel or Channel("127.0.0.1", port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)
    finally:
        if own:
            channel.close()


async def test_health_is_not_serving_until_startup_hooks_finish() -> None:
    app = make_app()
    release = threading.Event()
    loaded = []

    @app.on_startup
    def load_weights() -> None:  # sync: runs in a worker thread, the loop keeps answering
        release.wait(10)
        loaded.append(True)

    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=0, http_port=0))
    starting = asyncio.create_task(server.start())
    while not server.http or not server.http.port or not server.grpc or not server.grpc.port:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert await health(server.grpc_port) == HealthCheckResponse.NOT_SERVING
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 503
        release.set()
        await starting
        assert loaded == [True]
        assert await health(server.grpc_port) == HealthCheckResponse.SERVING
        assert await health(server.grpc_port, "") == HealthCheckResponse.SERVING
        assert (await http.get("/ready")).json() == {"status": "ready"}
    await server.stop(grace_period=0)


async def test_graceful_shutdown_finishes_streams_and_refuses_new_calls() -> None:
    app = make_app()
    stopped = []

    @app.on_shutdown
    async def unload() -> None:
        stopped.append(True)

    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=0, http_port=None, grace_period=5))
    await server.start()
    async with BlazeClient("127.0.0.1", server.grpc_port) as client:
        stream = client.stream("generate", prompt="s", n=20, delay=0.02)
        first = await stream.__anext__()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.05)
        assert await health(server.grpc_port, channel=client.channel) == HealthCheckResponse.NOT_SERVING
        with pytest.raises(BlazeError) as err:
            await client.predict("echo", text="late")
        assert err.value.status == Status.UNAVAILABLE
        rest = [c async for c in stream]  # the stream in flight gets its grace period
        assert [first, *rest] == [{"token": f"s{i}", "token_id": i} for i in range(20)]
        await stopping
    assert stopped == [True]


async def test_streams_past_the_grace_period_are_cancelled() -> None:
    app = make_app()
    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=0, http_port=None, grace_period=0.2))
    await server.start()
    async with BlazeClient("127.0.0.1", server.grpc_port) as client:
        stream = client.stream("generate", prompt="s", n=10_000, delay=0.01)
        await stream.__anext__()
        await asyncio.wait_for(server.stop(), 5)
        with pytest.raises(BlazeError):
            async for _ in stream:
                pass


def test_serve_config_validates() -> None:
    with pytest.raises(ValueError, match="both transports are off"):
        ServeConfig(grpc_port=None, http_port=None)
    with pytest.raises(ValueError, match="grpc_port must be between 0 and 65535"):
        ServeConfig(grpc_port=70000)
    with pytest.raises(ValueError, match="grace_period must be >= 0"):
        ServeConfig(grace_period=-1)
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        BlazeApp(max_batch_size=0)
