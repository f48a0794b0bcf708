"""``blaze ray serve`` as docs/scaling.md runs it, on a one-node local Ray cluster: 2 replicas of
examples/replicas.py behind Ray Serve's HTTP and gRPC proxies.

The tests share the one deployment and run in order: the last kills a replica, then stops it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from blazerpc import BlazeClient, BlazeError, Status
from examples.replicas import app
from tests.conftest import ROOT, free_port, serving, wait_http_ready
from tests.doc_commands import code_blocks, run_doc_command
from tests.ray_serve.processes import blaze_ray, descendants, stop, stop_all, wait_gone

DOC = (ROOT / "docs" / "scaling.md").read_text()
pytestmark = pytest.mark.timeout(180)


@dataclass
class Deployment:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    command = code_blocks(DOC, "bash")[0].strip()
    assert command == "blaze ray serve examples.replicas:app --replicas 2"
    http_port, grpc_port = free_port(), free_port()
    argv = [*shlex.split(command)[1:], "--num-cpus", "2", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    log = tmp_path_factory.mktemp("ray") / "blaze-ray-serve.log"
    process = blaze_ray(argv, log)
    try:
        wait_http_ready(http_port, timeout=120)
        yield Deployment(process, http_port, grpc_port, log)
    finally:
        stop_all(process)  # the last test stops it; this is for a failed run


def http_pids(deployment: Deployment, calls: int) -> list[int]:
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        return [client.post("/whoami", json={}).raise_for_status().json()["pid"] for _ in range(calls)]


async def grpc_pids(deployment: Deployment, calls: int) -> list[int]:
    async with BlazeClient("127.0.0.1", deployment.grpc_port, registry=app.registry, timeout=30) as client:
        return [(await client.predict("whoami")).pid for _ in range(calls)]


def test_the_documented_calls_answer(deployed: Deployment) -> None:
    lines = code_blocks(DOC, "bash")[1].splitlines()
    whoami, count, grpc_whoami, health = (run_doc_command(c, deployed.grpc_port, deployed.http_port) for c in lines)
    assert json.loads(whoami)["pid"] in descendants(deployed.process.pid)
    assert count.split("\n\n")[:4] == [*(f'data: {{"result": {n}}}' for n in (1, 2, 3)), "data: [DONE]"]
    assert int(json.loads(grpc_whoami)["pid"]) in descendants(deployed.process.pid)
    assert json.loads(health) == {"status": "SERVING"}


def test_http_calls_spread_over_both_replicas(deployed: Deployment) -> None:
    pids = set(http_pids(deployed, 40))
    assert len(pids) == 2, pids
    assert pids <= descendants(deployed.process.pid)  # replicas of this command's Ray instance


async def test_grpc_calls_spread_over_both_replicas(deployed: Deployment) -> None:
    pids = set(await grpc_pids(deployed, 40))
    assert len(pids) == 2, pids


PROTOC_CLIENT = textwrap.dedent(
    """
    import sys
    import grpc
    import blazerpc_pb2, blazerpc_pb2_grpc

    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = blazerpc_pb2_grpc.InferenceServiceStub(channel)
        print(sorted({stub.PredictWhoami(blazerpc_pb2.WhoamiRequest()).pid for _ in range(40)}))
        print([reply.result for reply in stub.PredictCount(blazerpc_pb2.CountRequest(to=3, every_ms=1))])
    """
)


def test_a_protoc_made_client_calls_through_the_grpc_proxy(deployed: Deployment, tmp_path: Path) -> None:
    proto = [sys.executable, "-m", "blazerpc.cli", "proto", "examples.replicas:app", "--output-dir", str(tmp_path)]
    subprocess.run(proto, check=True, capture_output=True, cwd=ROOT)
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}"]
    protoc += [f"--grpc_python_out={tmp_path}", str(tmp_path / "blazerpc.proto")]
    subprocess.run(protoc, check=True, capture_output=True)
    (tmp_path / "client.py").write_text(PROTOC_CLIENT)
    done = subprocess.run(
        [sys.executable, "client.py", f"127.0.0.1:{deployed.grpc_port}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    pids, counted = done.stdout.splitlines()
    assert len(json.loads(pids)) == 2
    assert counted == "[1, 2, 3]"


async def test_errors_keep_their_status(deployed: Deployment) -> None:
    async with serving(app) as direct, httpx.AsyncClient() as http:  # blaze serve's answers, to compare
        for path, body in [("/whoami", {"sleep_s": 100}), ("/count", {"to": "many"}), ("/nowhere", {})]:
            via_ray = await http.post(deployed.url + path, json=body)
            own = await http.post(f"http://127.0.0.1:{direct.http_port}{path}", json=body)
            assert (via_ray.status_code, via_ray.json()) == (own.status_code, own.json())
    async with BlazeClient("127.0.0.1", deployed.grpc_port, registry=app.registry) as client:
        with pytest.raises(BlazeError) as unary:
            await client.predict("whoami", sleep_s=100)
        assert unary.value.status == Status.INVALID_ARGUMENT
        assert "sleep_s" in unary.value.message
        with pytest.raises(BlazeError) as streaming:
            async with client.stream("count", to=10**9) as numbers:
                [n async for n in numbers]
        assert streaming.value.status == Status.INVALID_ARGUMENT
        assert "to" in streaming.value.message


async def test_the_http_app_is_blaze_serves(deployed: Deployment) -> None:
    paths = ["/health", "/ready", "/models", "/docs", "/redoc", "/openapi.json", "/metrics"]
    async with serving(app) as direct, httpx.AsyncClient() as client:
        for path in paths:
            via_ray = await client.get(deployed.url + path)
            own = await client.get(f"http://127.0.0.1:{direct.http_port}{path}")
            assert via_ray.status_code == own.status_code, path
            assert via_ray.headers["content-type"] == own.headers["content-type"], path
            if path in ("/openapi.json", "/models", "/health", "/ready"):
                assert via_ray.json() == own.json(), path
        request_id = (await client.post(deployed.url + "/whoami", json={}, headers={"x-request-id": "req-7"})).headers
        assert request_id.get_list("x-request-id") == ["req-7"]  # one header, not Ray's and ours


def wait_for_report(report: Path, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.exists() and report.read_text():
            return report.read_text()
        time.sleep(0.05)
    raise TimeoutError(f"the stream never reported how it ended ({report})")


def test_an_http_client_that_leaves_cancels_the_replicas_generator(deployed: Deployment, tmp_path: Path) -> None:
    report = tmp_path / "http-stream"
    body = {"to": 1000, "every_ms": 20, "report": str(report), "stream": True}
    with httpx.stream("POST", deployed.url + "/count", json=body, timeout=30) as events:
        lines = events.iter_lines()
        assert next(lines) == 'data: {"result": 1}'
    ended = wait_for_report(report)
    assert ended.startswith("closed after ")
    assert int(ended.split()[-1]) < 100  # 1,000 numbers take 20 s; it stopped within ~2 s


async def test_a_grpc_client_that_cancels_cancels_the_replicas_generator(deployed: Deployment, tmp_path: Path) -> None:
    report = tmp_path / "grpc-stream"
    client = BlazeClient("127.0.0.1", deployed.grpc_port, registry=app.registry)
    async with client, client.stream("count", to=100, every_ms=200, report=str(report)) as numbers:
        assert await anext(numbers) == 1
        # Cancel while the proxy waits for the next number: a cancel that lands while it is still
        # writing this one is swallowed by Ray's proxy (docs/scaling.md, "Streams").
        await asyncio.sleep(0.1)
    ended = await asyncio.to_thread(wait_for_report, report)
    assert ended.startswith("closed after ")
    assert int(ended.split()[-1]) < 20  # 100 numbers take 20 s; it stopped within ~2 s


async def test_a_killed_replica_is_replaced_and_calls_keep_succeeding(deployed: Deployment) -> None:
    before = set(await asyncio.to_thread(http_pids, deployed, 30))
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # Every call after the kill succeeds (over both proxies) while Ray replaces the replica.
    after = await asyncio.to_thread(http_pids, deployed, 20) + await grpc_pids(deployed, 20)
    assert victim not in after
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pids = set(await asyncio.to_thread(http_pids, deployed, 10))
        if pids - before:
            break
    else:
        raise AssertionError("Ray did not replace the killed replica within 90 s")


def test_sigint_removes_the_deployment_and_stops_ray(deployed: Deployment) -> None:
    ray_processes = descendants(deployed.process.pid)
    assert len(ray_processes) >= 4  # GCS, raylet, controller, proxy, replicas...
    assert stop(deployed.process) == 0
    log = deployed.log.read_text(errors="replace")
    assert "removing 'blazerpc'" in log
    assert not wait_gone(ray_processes), "Ray processes left behind"
