"""Fuzzing real servers (the example apps and ``blaze llm``): every route's body from its OpenAPI
schema, valid and invalid (schemathesis), every gRPC method's payload as random and mutated
protobuf bytes (hypothesis). No answer may be a 5xx or INTERNAL/UNKNOWN, ``/health`` keeps
answering fast throughout, and a normal request is served at the end."""

from __future__ import annotations

import collections
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from blazerpc import BlazeApp
from blazerpc.protobuf.codec import encode
from blazerpc.protobuf.descriptors import Schema, method_path, request_name
from tests.conftest import blaze, free_port, wait_http_ready

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases on every run: a failure here reproduces
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
VALID = {  # one valid request per model, the seed the gRPC mutations start from
    "generate": {"prompt": "a b c", "max_tokens": 3},
    "echo": {"text": "hi", "times": 2},
    "normalize": {"x": np.ones((2, 4), np.float32)},
    "iris": {"features": np.ones((1, 4), np.float32)},
}


POLL_HEALTH = """
import json, sys, threading, time, httpx
stop, latencies, failures = threading.Event(), [], []
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
with httpx.Client(base_url=sys.argv[1], timeout=10) as http:
    while not stop.wait(0.02):
        started = time.perf_counter()
        try:
            http.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
        latencies.append(time.perf_counter() - started)
print(json.dumps({"latencies": latencies, "failures": failures}))
"""


class HealthWatch:
    """Polls ``/health`` every 20 ms on its own connection while the fuzzing runs, from its own
    process: the fuzzers' work in this one (and its GIL) must not count as the server's latency."""

    def __init__(self, port: int) -> None:
        self.port, self.latencies, self.failures = port, list[float](), list[str]()

    def __enter__(self) -> HealthWatch:
        self.poller = subprocess.Popen(
            [sys.executable, "-c", POLL_HEALTH, f"http://127.0.0.1:{self.port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.poller.communicate(timeout=30)
        polled = json.loads(out)
        self.latencies, self.failures = polled["latencies"], polled["failures"]

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


def fuzz_http(base_url: str, seen: collections.Counter[tuple[str, str, int]]) -> None:
    schema = schemathesis.openapi.from_dict(httpx.get(f"{base_url}/openapi.json").json())
    session = requests.Session()
    for operation in (result.ok() for result in schema.get_all_operations()):
        for mode in schemathesis.GenerationMode:
            try:
                fuzz_operation(operation, mode, base_url, session, seen)
            except Unsatisfiable:  # e.g. no invalid request exists for GET /health
                pass


def fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    base_url: str,
    session: requests.Session,
    seen: collections.Counter[tuple[str, str, int]],
) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        reply = case.call(base_url=base_url, session=session, timeout=60)
        seen[operation.label, mode.value, reply.status_code] += 1
        assert reply.status_code < 500, f"{operation.label} {case.body!r:.300}: {reply.text:.300}"

    call()


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid message with bytes flipped, cut, inserted or repeated; or random bytes."""
    position = st.integers(0, max(len(valid) - 1, 0))
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(position, st.integers(0, 255)).map(lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] + 1 :]),
        position.map(lambda p: valid[:p]),
        st.tuples(position, st.binary(min_size=1, max_size=16)).map(lambda p: valid[: p[0]] + p[1] + valid[p[0] :]),
        st.integers(2, 50).map(lambda n: valid * n),
    )


def fuzz_grpc(port: int, app: BlazeApp, seen: collections.Counter[tuple[str, str, int]]) -> None:
    schema = Schema.of(app.registry)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for model in app.registry:
            valid = encode(schema.descriptor(request_name(model)), VALID[model.name]).SerializeToString()
            kind: Callable[..., Any] = channel.unary_stream if model.streaming else channel.unary_unary
            fuzz_method(model.name, model.streaming, kind(method_path(model)), valid, seen)


def fuzz_method(
    name: str, streaming: bool, method: Any, valid: bytes, seen: collections.Counter[tuple[str, str, int]]
) -> None:
    @FUZZ
    @given(payload=mutated(valid))
    def call(payload: bytes) -> None:
        try:
            reply = method(payload, timeout=60)
            if streaming:
                list(reply)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        seen[name, "grpc", code.value[0]] += 1
        assert code not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}, f"{name} {payload!r:.200}: {code}"

    call()


@pytest.fixture(params=["examples.echo:app", "examples.iris:app", "llm"])
def target(request: pytest.FixtureRequest, process_cleanup: list) -> Iterator[tuple[int, int, BlazeApp]]:
    http_port, grpc_port = free_port(), free_port()
    ports = ["--host", "127.0.0.1"]
    if request.param == "llm":
        from blazerpc.llm_app.service import LLMService

        tiny_dir: Path = request.getfixturevalue("tiny_dir")
        app = LLMService(tiny_dir).app
        server = blaze("llm", "--model", str(tiny_dir), *ports, "--port", str(http_port), "--grpc-port", str(grpc_port))
    else:
        from blazerpc.workers import import_app

        app = import_app(request.param)
        server = blaze("serve", request.param, *ports, "--http-port", str(http_port), "--port", str(grpc_port))
    process_cleanup.append(server)
    wait_http_ready(http_port)
    yield http_port, grpc_port, app


def test_fuzzed_requests_get_no_server_errors_and_health_stays_fast(target: tuple[int, int, BlazeApp]) -> None:
    http_port, grpc_port, app = target
    seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
    with HealthWatch(http_port) as watch:
        fuzz_http(f"http://127.0.0.1:{http_port}", seen)
        fuzz_grpc(grpc_port, app, seen)
    p99 = watch.p99()
    print(f"{sum(seen.values())} fuzzed requests ({len(watch.latencies)} /health polls, p99 {p99 * 1000:.1f} ms):")
    for (what, how, code), count in sorted(seen.items()):
        print(f"  {what:28} {how:9} {code:4} x {count}")
    assert not watch.failures and p99 < 0.5  # an order of magnitude (stalls were seconds); the figure is printed above
    name = next(iter(app.registry)).name
    body = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in VALID[name].items()}
    assert httpx.post(f"http://127.0.0.1:{http_port}/{name}", json=body, timeout=60).status_code == 200
