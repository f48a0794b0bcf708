"""An HTTP call's Context: headers in, x-request-id and the function's headers out, disconnects."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.conftest import serving, until
from tests.context_app import Seen, make_context_app


async def test_the_context_carries_headers_request_id_and_peer() -> None:
    seen = Seen()
    async with (
        serving(make_context_app(seen), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        reply = await http.post("/whoami", json={"name": "h"}, headers={"X-Request-ID": "req-7", "X-Tenant": "acme"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["request_id"] == "req-7" and body["transport"] == "http" and body["method"] == "POST /whoami"
    assert body["tenant"] == "acme" and re.fullmatch(r"127\.0\.0\.1:\d+", body["peer"])
    assert body["remaining"] == -1  # HTTP has no deadline
    assert reply.headers["x-request-id"] == "req-7" and reply.headers["x-served-by"] == "h"
    (ctx,) = seen.contexts
    assert ctx.metadata["content-type"] == "application/json" and ctx.model == "whoami"
    assert ctx.http_status == 200 and ctx.duration_s > 0


async def test_every_answer_has_a_request_id_errors_and_unknown_paths_included() -> None:
    async with (
        serving(make_context_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        made = await http.post("/whoami", json={"name": "x"})
        invalid = await http.post("/whoami", json={"name": 1})
        missing = await http.get("/nope", headers={"x-request-id": "mine"})
        refused = await http.post("/refuse", json={"why": "policy"})
        health = await http.get("/health")
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    assert made.json()["request_id"] == made.headers["x-request-id"]
    assert invalid.status_code == 422 and "x-request-id" in invalid.headers
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "mine"
    assert refused.status_code == 403 and refused.headers["x-why"] == "policy" and "x-request-id" in refused.headers
    assert "x-request-id" not in health.headers  # probes are not calls


async def test_a_stream_sends_headers_set_before_its_first_chunk() -> None:
    async with (
        serving(make_context_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        reply = await http.post("/tokens", json={"n": 2, "stream": True}, headers={"x-request-id": "s-2"})
    assert reply.headers["x-stream"] == "yes" and reply.headers["x-request-id"] == "s-2"
    assert reply.text == 'data: {"result": "t0"}\n\ndata: {"result": "t1"}\n\ndata: [DONE]\n\n'


async def test_a_client_leaving_a_stream_marks_the_context_cancelled() -> None:
    seen = Seen()
    async with serving(make_context_app(seen), grpc_port=None) as server:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
            http.stream("POST", "/tokens", json={"n": 10_000, "delay": 0.01, "stream": True}) as events,
        ):
            lines = events.aiter_lines()
            assert (await anext(lines)) == 'data: {"result": "t0"}'
        await until(lambda: "tokens" in seen.cancelled)
    assert seen.cancelled["tokens"] is True


async def test_a_sync_function_polling_cancelled_stops_when_the_client_leaves() -> None:
    seen = Seen()
    async with serving(make_context_app(seen), grpc_port=None) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            try:
                await http.post("/wait", json={"seconds": 30}, timeout=0.3)
                raise AssertionError("the client should have given up")
            except httpx.TimeoutException:
                pass
        await until(lambda: "wait" in seen.cancelled, timeout=5)
    assert seen.cancelled["wait"] is True


async def test_a_batched_model_gets_one_context_per_request_over_http() -> None:
    async with (
        serving(make_context_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        a, b = await asyncio.gather(
            http.post("/upper", json={"text": "a"}, headers={"x-request-id": "ha"}),
            http.post("/upper", json={"text": "b"}, headers={"x-request-id": "hb"}),
        )
    assert a.json() == {"result": "A:ha"} and b.json() == {"result": "B:hb"}
