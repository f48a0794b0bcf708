"""Middleware around every call: before and after on unary, streaming and batched models over both
transports and on ``blaze llm``'s routes, refusals with a status, and what a broken middleware does."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from blazerpc import BlazeApp, BlazeClient, BlazeError, Context, Middleware, Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from blazerpc.middleware import MiddlewareChain
from tests.conftest import serving
from tests.context_app import grpc_call, make_context_app


class Recorder(Middleware):
    """Writes down every call as ``after`` sees it; refuses calls that send ``x-refuse``."""

    def __init__(self, name: str = "rec", journal: list[str] | None = None) -> None:
        self.name = name
        self.journal = journal if journal is not None else []
        self.calls: list[Context] = []

    async def before(self, ctx: Context) -> None:
        self.journal.append(f"{self.name}.before")
        ctx.state["seen_by"] = self.name
        if "x-refuse" in ctx.metadata:
            raise BlazeError(Status.RESOURCE_EXHAUSTED, "slow down", retry_after=2)

    def after(self, ctx: Context) -> None:
        self.journal.append(f"{self.name}.after")
        self.calls.append(ctx)

    def outcomes(self) -> list[tuple[str, str, Status, int]]:
        return [(c.transport, c.method, c.status, c.messages) for c in self.calls]


def app_with(recorder: Recorder) -> BlazeApp:
    app = make_context_app()
    app.add_middleware(recorder)
    return app


async def test_before_and_after_see_unary_streaming_and_batched_calls_on_both_transports() -> None:
    recorder = Recorder()
    app = app_with(recorder)
    async with (
        serving(app) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        await client.predict("whoami", name="g")
        assert [c async for c in client.stream("tokens", n=3)] == ["t0", "t1", "t2"]
        await asyncio.gather(client.predict("upper", text="a"), client.predict("upper", text="b"))
        await http.post("/whoami", json={"name": "h"})
        await http.post("/tokens", json={"n": 4, "stream": True})
        await http.post("/tokens", json={"n": 2})  # collected: not an event stream
        await http.post("/upper", json={"text": "c"})
        await http.get("/health")  # a probe: no middleware
    grpc = "/blazerpc.InferenceService/Predict"
    assert sorted(recorder.outcomes()) == sorted(
        [
            ("grpc", f"{grpc}Whoami", Status.OK, 0),
            ("grpc", f"{grpc}Tokens", Status.OK, 3),
            ("grpc", f"{grpc}Upper", Status.OK, 0),
            ("grpc", f"{grpc}Upper", Status.OK, 0),
            ("http", "POST /whoami", Status.OK, 0),
            ("http", "POST /tokens", Status.OK, 4),
            ("http", "POST /tokens", Status.OK, 0),
            ("http", "POST /upper", Status.OK, 0),
        ]
    )
    assert all(c.duration_s > 0 and c.state["seen_by"] == "rec" for c in recorder.calls)
    assert {c.model for c in recorder.calls} == {"whoami", "tokens", "upper"}
    assert [c.streaming for c in recorder.calls if c.method.endswith(("Tokens", "/tokens"))].count(True) == 2


async def test_a_refusal_in_before_is_the_status_on_both_transports_and_the_model_never_runs() -> None:
    recorder = Recorder()
    app = app_with(recorder)
    async with serving(app) as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        refused = await http.post("/whoami", json={"name": "h"}, headers={"x-refuse": "1"})
        reply = await grpc_call(server.grpc_port, app, "tokens", {"n": 3}, {"x-refuse": "1"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"] == {"status": "RESOURCE_EXHAUSTED", "code": 8, "message": "slow down"}
    assert reply.error is not None and reply.error.message == "slow down" and reply.messages == []
    assert [(c.status, c.http_status, c.model) for c in recorder.calls] == [
        (Status.RESOURCE_EXHAUSTED, 429, None),
        (Status.RESOURCE_EXHAUSTED, None, "tokens"),
    ]


async def test_after_sees_errors_cancellations_and_refusals_by_the_gate() -> None:
    recorder = Recorder()
    app = app_with(recorder)
    async with (
        serving(app, max_body_mb=0.001) as server,
        BlazeClient("127.0.0.1", server.grpc_port, registry=app.registry) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        with pytest.raises(BlazeError):
            await client.predict("refuse", why="x")
        await http.post("/refuse", json={"why": "x"})
        await http.post("/whoami", json={"name": "x" * 5000})  # 413 from the gate
        async with http.stream("POST", "/tokens", json={"n": 1000, "delay": 0.01, "stream": True}) as events:
            await anext(events.aiter_lines())
    assert [(c.transport, c.status, c.http_status) for c in recorder.calls[:3]] == [
        ("grpc", Status.PERMISSION_DENIED, None),
        ("http", Status.PERMISSION_DENIED, 403),
        ("http", Status.RESOURCE_EXHAUSTED, 413),
    ]
    stream = recorder.calls[3]
    assert stream.status is Status.CANCELLED and stream.http_status == 200 and stream.messages >= 1


async def test_order_is_as_added_before_and_reversed_after() -> None:
    journal: list[str] = []
    app = make_context_app()
    app.add_middleware(Recorder("a", journal))
    app.add_middleware(Recorder("b", journal))
    async with serving(app, grpc_port=None) as server, httpx.AsyncClient() as http:
        await http.post(f"http://127.0.0.1:{server.http_port}/whoami", json={"name": "x"})
    assert journal == ["a.before", "b.before", "b.after", "a.after"]


class Broken(Middleware):
    def __init__(self, where: str) -> None:
        self.where = where

    def before(self, ctx: Context) -> None:
        if self.where == "before":
            raise ValueError("bug in before")

    def after(self, ctx: Context) -> None:
        if self.where == "after":
            raise ValueError("bug in after")


async def test_a_bug_in_before_is_internal_and_a_bug_in_after_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    for where, code in (("before", 500), ("after", 200)):
        app = make_context_app()
        app.add_middleware(Broken(where))
        async with serving(app, grpc_port=None) as server, httpx.AsyncClient() as http:
            reply = await http.post(f"http://127.0.0.1:{server.http_port}/whoami", json={"name": "x"})
        assert reply.status_code == code, where
        if where == "before":
            assert reply.json()["error"]["message"] == "middleware Broken.before failed: ValueError: bug in before"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("Broken.before" in r.getMessage() for r in errors)
    assert any("Broken.after failed after POST /whoami" in r.getMessage() for r in errors)


def test_a_middleware_needs_before_or_after_and_a_plain_after() -> None:
    app = BlazeApp()
    for useless in (object(), Middleware()):
        with pytest.raises(TypeError, match="neither"):
            app.add_middleware(useless)

    class AsyncAfter:
        async def after(self, ctx: Context) -> None: ...

    with pytest.raises(TypeError, match="plain function"):
        app.add_middleware(AsyncAfter())

    class OnlyBefore:  # any object with the methods will do
        def before(self, ctx: Context) -> None: ...

    assert MiddlewareChain([OnlyBefore()]).has_before


async def test_middleware_sees_every_route_of_the_llm_server(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=4))
    recorder = Recorder()
    service.app.add_middleware(recorder)
    body = {"prompt": "hi", "max_tokens": 3, "ignore_eos": True}
    async with (
        serving(service.app) as server,
        BlazeClient("127.0.0.1", server.grpc_port, timeout=60) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):
        assert len([c async for c in client.stream("generate", **body)]) == 3
        await http.post("/generate", json={**body, "stream": True})
        openai = AsyncOpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="unused")
        model = (await openai.models.list()).data[0].id
        chunks = await openai.completions.create(model=model, prompt="hi", max_tokens=3, stream=True)
        assert len([c async for c in chunks]) == 3
        await openai.close()
        refused = await http.post("/v1/completions", json={"model": model, "prompt": "hi"}, headers={"x-refuse": "1"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert recorder.outcomes() == [
        ("grpc", "/blazerpc.InferenceService/PredictGenerate", Status.OK, 3),
        ("http", "POST /generate", Status.OK, 3),
        ("http", "GET /v1/models", Status.OK, 0),
        ("http", "POST /v1/completions", Status.OK, 3),
        ("http", "POST /v1/completions", Status.RESOURCE_EXHAUSTED, 0),
    ]
