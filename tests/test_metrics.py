"""``/metrics`` read by a Prometheus text parser while real clients call over both transports."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from blazerpc import BlazeApp, BlazeClient, BlazeError
from blazerpc.batching import Batcher
from blazerpc.metrics import CallMetrics, Metrics
from blazerpc.runtime import Runtime
from tests.apps import make_app
from tests.conftest import ROOT, blaze, free_port, serving, wait_http_ready

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (the parser rejects malformed text)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def batched_app() -> BlazeApp:
    app = make_app()

    @app.model("double", batching=True, max_batch_size=8, batch_timeout_ms=20)
    def double(x: int) -> int:  # hints say one request; in list mode it gets a list of them
        return [2 * v for v in x]  # type: ignore[attr-defined]

    return app


async def test_counts_match_the_calls_made_over_both_transports_and_scrapes_see_calls_in_flight() -> None:
    async with (
        serving(batched_app()) as server,
        BlazeClient("127.0.0.1", server.grpc_port) as grpc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        sleeping = [asyncio.create_task(grpc.predict("sleep", seconds=0.5)) for _ in range(3)]
        sleeping += [asyncio.create_task(http.post("/sleep", json={"seconds": 0.5})) for _ in range(2)]
        await asyncio.sleep(0.2)
        during = await scrape(http)
        assert value(during, "blazerpc_requests_in_flight", model="sleep", transport="grpc") == 3
        assert value(during, "blazerpc_requests_in_flight", model="sleep", transport="http") == 2
        await asyncio.gather(*sleeping)

        for _ in range(5):
            assert await grpc.predict("echo", text="a") == "a"
            assert (await http.post("/echo", json={"text": "b"})).json() == {"result": "b"}
        with pytest.raises(BlazeError):
            await grpc.predict("fail", kind="blaze")
        assert (await http.post("/echo", json={"times": 1})).status_code == 422
        assert (await http.post("/no-such-model", json={})).status_code == 404
        async with grpc.stream("generate", prompt="p", n=7) as chunks:
            assert len([c async for c in chunks]) == 7
        sse = await http.post("/generate", json={"prompt": "p", "n": 4, "stream": True})
        assert sse.text.count("data: {") == 4
        doubled = await asyncio.gather(*(grpc.predict("double", x=i) for i in range(6)))
        answers = await asyncio.gather(*(http.post("/double", json={"x": i}) for i in range(4)))
        doubled += [r.json()["result"] for r in answers]
        assert sorted(doubled) == sorted([2 * i for i in range(6)] + [2 * i for i in range(4)])

        after = await scrape(http)

    def requests(model: str, transport: str, code: str = "OK") -> float:
        return value(after, "blazerpc_requests_total", model=model, transport=transport, code=code)

    assert requests("sleep", "grpc") == 3 and requests("sleep", "http") == 2
    assert requests("echo", "grpc") == 5 and requests("echo", "http") == 5
    assert requests("fail", "grpc", "NOT_FOUND") == 1 and requests("echo", "http", "INVALID_ARGUMENT") == 1
    assert requests("unmatched", "http", "NOT_FOUND") == 1  # a random path is not a series of its own
    assert requests("generate", "grpc") == 1 and requests("generate", "http") == 1
    assert value(after, "blazerpc_requests_in_flight", model="sleep", transport="grpc") == 0
    assert value(after, "blazerpc_stream_messages_total", model="generate", transport="grpc") == 7
    assert value(after, "blazerpc_stream_messages_total", model="generate", transport="http") == 4
    assert value(after, "blazerpc_request_duration_seconds_count", model="echo", transport="grpc") == 5
    slow = value(after, "blazerpc_request_duration_seconds_bucket", model="sleep", transport="http", le="0.25")
    assert slow == 0 and value(after, "blazerpc_request_duration_seconds_sum", model="sleep", transport="http") >= 1.0
    batches = value(after, "blazerpc_batch_size_count", model="double")
    assert 2 <= batches < 10  # two bursts, each gathered into few calls
    assert value(after, "blazerpc_batch_size_sum", model="double") == 10
    assert value(after, "blazerpc_batch_queue_wait_seconds_count", model="double") == 10
    assert value(after, "blazerpc_batch_queue_depth", model="double") == 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert_documented(after, r"blazerpc_(?!llm_)\w+")


def assert_documented(samples: Samples, pattern: str) -> None:
    """Every metric docs/production.md names (``pattern``) is in the scrape, and the reverse."""
    doc = (ROOT / "docs" / "production.md").read_text()
    documented = set(re.findall(rf"`({pattern})`", doc))
    names = {name for name, _ in samples if re.fullmatch(pattern, name) and not name.endswith("_created")}
    assert documented and documented == {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


async def test_metrics_are_open_with_api_keys_unless_the_docs_are_protected_and_can_be_turned_off() -> None:
    app = make_app()
    async with (
        serving(app, api_keys=("k1",)) as open_metrics,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{open_metrics.http_port}") as http,
    ):
        assert (await http.post("/echo", json={"text": "x"})).status_code == 401
        samples = await scrape(http)
        assert value(samples, "blazerpc_requests_total", model="echo", transport="http", code="UNAUTHENTICATED") == 1
    async with (
        serving(make_app(), api_keys=("k1",), protect_docs=True) as protected,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{protected.http_port}") as http,
    ):
        assert (await http.get("/metrics")).status_code == 401
        await scrape(http, authorization="Bearer k1")
    async with (
        serving(make_app(), metrics=False) as off,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{off.http_port}") as http,
    ):
        assert (await http.get("/metrics")).status_code == 404


async def test_a_grpc_only_server_serves_metrics_on_its_own_port() -> None:
    async with (
        serving(make_app(), http_port=None, metrics_port=0) as server,
        BlazeClient("127.0.0.1", server.grpc_port) as grpc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.metrics_server.port}") as http,
    ):
        await grpc.predict("add", a=1)
        samples = await scrape(http)
        assert value(samples, "blazerpc_requests_total", model="add", transport="grpc", code="OK") == 1
        assert (await http.get("/echo")).status_code == 404  # nothing but /metrics there


async def test_the_metrics_port_speaks_tls_as_the_server_does(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    options = {"http_port": None, "metrics_port": 0, "ssl_certfile": str(tmp_path / "server.pem")}
    async with serving(make_app(), **options) as server:
        url = f"https://127.0.0.1:{server.metrics_server.port}/metrics"
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))) as https:
            assert (await https.get(url)).status_code == 200
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient() as untrusting:
                await untrusting.get(url)


def test_workers_share_one_view_of_the_counters(process_cleanup: list[Any]) -> None:
    """``--workers 2``: whichever worker answers a scrape reports the calls both workers served."""
    grpc_port, http_port = free_port(), free_port()
    proc = blaze("serve", "tests.apps:app", "--host", "127.0.0.1", "--port", str(grpc_port),
                 "--http-port", str(http_port), "--workers", "2", "--grace-period", "0")  # fmt: skip
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    pids = set()
    for _ in range(40):  # a new connection each: the kernel spreads them over both workers
        pids.add(httpx.post(f"http://127.0.0.1:{http_port}/whoami", json={}).json()["result"])
    assert len(pids) == 2, "the calls all went to one worker"
    scrapes = [parse(httpx.get(f"http://127.0.0.1:{http_port}/metrics").text) for _ in range(6)]
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    for samples in scrapes:
        assert value(samples, "blazerpc_requests_total", model="whoami", transport="http", code="OK") == 40
        assert total(samples, "blazerpc_requests_in_flight", model="/metrics") >= 1  # the scrape itself


def test_call_metrics_label_models_routes_and_unmatched_paths() -> None:
    metrics = Metrics()
    calls = metrics.calls
    assert calls is metrics.calls  # one set per app: a second server of the app shares it
    calls.know_routes(["/health", "/echo", "/v1/models"], ["echo"])
    assert isinstance(calls, CallMetrics)
    assert calls.http_targets == {"/health": "/health", "/echo": "echo", "/v1/models": "/v1/models"}


async def test_the_batcher_reports_depth_and_waits_to_its_observer() -> None:
    seen: list[tuple[str, Any]] = []

    class Observer:
        def queued(self, depth: int) -> None:
            seen.append(("queued", depth))

        def ran(self, waits: Any) -> None:
            seen.append(("ran", len(waits)))

    app = batched_app()
    model = app.registry["double"]
    runtime = Runtime(2)
    assert model.batch is not None
    batcher = Batcher(model, runtime, model.batch, Observer())
    batcher.start()
    try:
        assert await asyncio.gather(*(batcher.submit({"x": i}) for i in range(3))) == [0, 2, 4]
    finally:
        await batcher.stop()
        runtime.shutdown()
    assert seen[:3] == [("queued", 1), ("queued", 2), ("queued", 3)]
    assert ("queued", 0) in seen and ("ran", 3) in seen
