"""``LLMService`` supervised: a killed engine ends requests with UNAVAILABLE, readiness follows the
engine, it comes back, and a server whose engine keeps dying exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from grpclib.health.v1.health_pb2 import HealthCheckResponse

from blazerpc import BlazeClient, BlazeError, Status
from blazerpc.llm.client import EngineState, RestartPolicy
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from tests.conftest import blaze, free_port, grpc_health, serving, until, wait_http_ready

CONFIG = EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=8)
LONG = {"prompt": "a long story", "max_tokens": 400, "temperature": 0, "ignore_eos": True}


async def test_a_killed_engine_ends_streams_with_unavailable_flips_readiness_and_comes_back(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, CONFIG, RestartPolicy(backoff_s=1.5))
    async with (
        serving(service.app) as server,
        BlazeClient("127.0.0.1", server.grpc_port, timeout=60) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):
        async with (
            client.stream("generate", **LONG) as grpc_chunks,
            http.stream("POST", "/generate", json={**LONG, "stream": True}) as sse,
        ):
            await anext(grpc_chunks)
            lines = sse.aiter_lines()
            assert (await anext(lines)).startswith("data: {")
            pid = service.door.client.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            try:
                async for _ in grpc_chunks:
                    pass
                raise AssertionError("the gRPC stream ended without an error")
            except BlazeError as exc:
                assert exc.status is Status.UNAVAILABLE and "SIGKILL" in exc.message
            events = [json.loads(line[6:]) for line in [line async for line in lines] if line.startswith("data: {")]
            assert events[-1]["error"]["status"] == "UNAVAILABLE"

        ready = await http.get("/ready")
        assert ready.status_code == 503 and "restarting" in ready.json()["error"]["message"]
        assert await grpc_health(server.grpc_port) == HealthCheckResponse.NOT_SERVING
        refused = await http.post("/generate", json={"prompt": "hi"})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1

        await until(lambda: service.door.client.state is EngineState.READY, timeout=60)
        assert (await http.get("/ready")).status_code == 200
        assert await grpc_health(server.grpc_port) == HealthCheckResponse.SERVING
        done = await http.post("/generate", json={"prompt": "hi", "max_tokens": 4, "ignore_eos": True})
        assert done.status_code == 200 and done.json()["num_tokens"] == 4


def engine_pid(server_pid: int) -> int | None:
    """The engine process: the server's child started by multiprocessing's spawn."""
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(pid)
    return None


def test_blaze_llm_exits_non_zero_when_the_engine_keeps_dying(tiny_dir: Path, process_cleanup: list) -> None:
    port = free_port()
    proc = blaze("llm", "--model", str(tiny_dir), "--host", "127.0.0.1", "--port", str(port), "--no-grpc",
                 "--max-model-len", "512", "--kv-cache-mb", "16", "--max-engine-restarts", "1")  # fmt: skip
    process_cleanup.append(proc)
    wait_http_ready(port, timeout=120)
    first = engine_pid(proc.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    while httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:  # until the server sees it
        time.sleep(0.01)
    wait_http_ready(port, timeout=120)  # the one restart allowed
    second = engine_pid(proc.pid)
    assert second is not None and second != first
    os.kill(second, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "died: killed by SIGKILL" in out and "the engine died 2 times within 60 s" in out
