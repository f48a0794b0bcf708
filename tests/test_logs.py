"""The access log (one line per call) and the request id in every log line of a call."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from blazerpc import RequestIdFilter
from blazerpc.logs import FORMAT
from tests.conftest import serving
from tests.context_app import grpc_call, make_context_app

LATENCY = r"\d+\.\dms"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.getMessage(), r.request_id) for r in caplog.records if r.name == "blazerpc.access"]  # type: ignore[attr-defined]


async def test_one_line_per_call_with_transport_method_status_latency_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="blazerpc.access")
    app = make_context_app()
    async with (
        serving(app) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        await grpc_call(server.grpc_port, app, "whoami", {"name": "g"}, {"x-request-id": "g-1"})
        await grpc_call(server.grpc_port, app, "tokens", {"n": 3}, {"x-request-id": "g-2"})
        await grpc_call(server.grpc_port, app, "refuse", {"why": "w"}, {"x-request-id": "g-3"})
        await http.post("/whoami", json={"name": "h"}, headers={"x-request-id": "h-1"})
        await http.post("/tokens", json={"n": 2, "stream": True}, headers={"x-request-id": "h-2"})
        await http.post("/whoami", json={}, headers={"x-request-id": "h-3"})
        async with http.stream("POST", "/tokens", json={"n": 1000, "delay": 0.01, "stream": True}) as events:
            await anext(events.aiter_lines())
        await http.get("/health")
    expected = [
        (rf"grpc /blazerpc\.InferenceService/PredictWhoami OK {LATENCY}", "g-1"),
        (rf"grpc /blazerpc\.InferenceService/PredictTokens OK {LATENCY} 3 msgs", "g-2"),
        (rf"grpc /blazerpc\.InferenceService/PredictRefuse PERMISSION_DENIED {LATENCY}", "g-3"),
        (rf"http POST /whoami 200 {LATENCY}", "h-1"),
        (rf"http POST /tokens 200 {LATENCY} 2 msgs", "h-2"),
        (rf"http POST /whoami 422 {LATENCY}", "h-3"),
        (rf"http POST /tokens 200 CANCELLED {LATENCY} \d+ msgs", None),
    ]
    lines = access_lines(caplog)
    assert len(lines) == len(expected), lines  # no line for /health
    for (message, request_id), (pattern, want_id) in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, message), message
        assert request_id == want_id or (want_id is None and re.fullmatch(r"[0-9a-f]{16}", request_id))


async def test_log_lines_of_a_call_carry_its_request_id_even_from_a_worker_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    caplog.handler.setFormatter(logging.Formatter(FORMAT))
    app = make_context_app()
    async with (
        serving(app) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        await http.post("/whoami", json={"name": "over-http"}, headers={"x-request-id": "thread-1"})
        await grpc_call(server.grpc_port, app, "whoami", {"name": "over-grpc"}, {"x-request-id": "thread-2"})
    text = caplog.text
    assert re.search(r"INFO tests\.context_app \[thread-1\] whoami over-http", text), text
    assert re.search(r"INFO tests\.context_app \[thread-2\] whoami over-grpc", text), text
    assert re.search(r"INFO blazerpc\.access \[thread-1\] http POST /whoami 200", text), text
    assert re.search(r"INFO blazerpc \[-\] blazerpc .* serving", text), text  # outside any call


async def test_access_log_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="blazerpc.access")
    async with serving(make_context_app(), grpc_port=None, access_log=False) as server, httpx.AsyncClient() as http:
        await http.post(f"http://127.0.0.1:{server.http_port}/whoami", json={"name": "x"})
    assert access_lines(caplog) == []
