# ruff: noqa: E402  (the cap below comes before anything that may load torch)
from __future__ import annotations

from blazerpc.llm import cpu

cpu.apply_cap()  # BLAZE_CPU_ISA=avx2 caps torch's and oneDNN's dispatch too: before torch loads

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest

from blazerpc import BlazeApp, BlazeServer, ServeConfig

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.llm_fixtures"]  # the tiny model and `blaze llm` with the default model


@contextlib.asynccontextmanager
async def serving(app: BlazeApp, **options: Any) -> AsyncIterator[BlazeServer]:
    """Serve ``app`` in this event loop on free ports (gRPC and HTTP unless told otherwise)."""
    options.setdefault("grpc_port", 0)
    options.setdefault("http_port", 0)
    server = BlazeServer(app, ServeConfig(host="127.0.0.1", **options))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_period=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ready(port: int, timeout: float = 60.0, path: str = "/ready") -> None:
    """Poll the readiness endpoint until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} not ready after {timeout}s")


def blaze(*args: str, cwd: Path = ROOT, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "blazerpc.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture
def process_cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def grpc_health(port: int) -> int:
    channel = Channel("127.0.0.1", port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service="blazerpc.InferenceService"), timeout=5)
        return int(reply.status)
    finally:
        channel.close()
