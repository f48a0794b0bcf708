"""Event streams over real sockets: ``: ping`` comments while a stream is silent (before its first
event too), which raw clients see and the ``openai`` client ignores; errors before the interval
keep their real status; pings are not messages and leave disconnects and shutdown as they were."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import openai
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from blazerpc import BlazeApp, BlazeError, Context, Middleware, Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm_app.service import LLMService
from tests.conftest import serving, until

T = TypeVar("T")
PING = ": ping"
DONE = "data: [DONE]"


class Calls(Middleware):
    def __init__(self) -> None:
        self.ended: list[Context] = []

    def after(self, ctx: Context) -> None:
        self.ended.append(ctx)


def slow_app(finished: dict[str, float] | None = None) -> tuple[BlazeApp, Calls]:
    app = BlazeApp("sse")
    calls = Calls()
    app.add_middleware(calls)

    @app.model("slow", streaming=True)
    async def slow(chunks: list[str], pause: float = 0.0, fail: str = "") -> AsyncIterator[str]:
        """``pause`` seconds before each chunk, and before failing with ``fail`` (if given)."""
        try:
            for chunk in chunks:
                await asyncio.sleep(pause)
                yield chunk
            if fail:
                await asyncio.sleep(pause)
                if fail == "bug":
                    raise ValueError("a bug")
                raise BlazeError(Status.RESOURCE_EXHAUSTED, fail, retry_after=2)
        finally:
            if finished is not None:
                finished["slow"] = time.monotonic()

    return app, calls


async def frames(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> tuple[int, list[str]]:
    """The answer's status and its SSE frames as they came on the wire (comments included)."""
    async with http.stream("POST", path, json=body) as answer:
        raw = b"".join([chunk async for chunk in answer.aiter_raw()]).decode()
    return answer.status_code, [frame for frame in raw.split("\n\n") if frame]


def client(port: int, **options: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, **options)  # type: ignore[arg-type]


async def test_a_silent_stream_is_pinged_and_its_events_are_those_without_pings() -> None:
    app, calls = slow_app()
    body = {"chunks": ["a", "b"], "pause": 0.5, "stream": True}
    seen = []
    for interval in (0.05, 0):
        async with (
            serving(app, grpc_port=None, sse_ping_interval_s=interval) as server,
            client(server.http_port) as http,
        ):
            status, got = await frames(http, "/slow", body)
        assert status == 200
        seen.append(got)
    pinged, plain = seen
    assert PING not in plain and plain == ['data: {"result": "a"}', 'data: {"result": "b"}', DONE]
    assert [f for f in pinged if f != PING] == plain
    first, second = pinged.index(plain[0]), pinged.index(plain[1])
    assert first >= 1 and pinged[:first] == [PING] * first  # the 200 started with a ping, before any event
    assert second - first >= 2 and pinged[first + 1 : second] == [PING] * (second - first - 1)  # and between them
    assert [(c.status, c.messages, c.streaming) for c in calls.ended] == [(Status.OK, 2, True)] * 2


async def test_an_error_after_the_pings_started_the_stream_is_a_last_event_then_done() -> None:
    app, calls = slow_app()
    async with serving(app, grpc_port=None, sse_ping_interval_s=0.05) as server, client(server.http_port) as http:
        status, got = await frames(http, "/slow", {"chunks": [], "pause": 0.5, "fail": "queue is full", "stream": True})
        assert status == 200 and got[0] == PING and got[-1] == DONE
        error = json.loads(got[-2].removeprefix("data: "))
        assert error == {"error": {"status": "RESOURCE_EXHAUSTED", "code": 8, "message": "queue is full"}}
        assert set(got[:-2]) == {PING}
        status, got = await frames(http, "/slow", {"chunks": [], "pause": 0.5, "fail": "bug", "stream": True})
        assert status == 200 and json.loads(got[-2].removeprefix("data: "))["error"]["message"] == (
            "model 'slow' failed: ValueError: a bug"
        )
    assert [(c.status, c.http_status) for c in calls.ended] == [
        (Status.RESOURCE_EXHAUSTED, 200),
        (Status.INTERNAL, 200),
    ]


async def test_an_error_before_the_interval_is_a_real_status() -> None:
    app, calls = slow_app()
    async with serving(app, grpc_port=None, sse_ping_interval_s=1.0) as server, client(server.http_port) as http:
        for pause in (0, 0.05):  # at once, and after a wait well inside the interval
            body: dict[str, object] = {"chunks": [], "pause": pause, "fail": "queue is full", "stream": True}
            answer = await http.post("/slow", json=body)
            assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
            assert answer.json()["error"]["message"] == "queue is full"
        answer = await http.post("/slow", json={"chunks": [], "fail": "bug", "stream": True})
        assert (
            answer.status_code == 500 and answer.json()["error"]["message"] == "model 'slow' failed: ValueError: a bug"
        )
        status, got = await frames(http, "/slow", {"chunks": [], "stream": True})  # no chunk at all
        assert (status, got) == (200, [DONE])
    assert [c.status for c in calls.ended] == [Status.RESOURCE_EXHAUSTED] * 2 + [Status.INTERNAL, Status.OK]


async def test_a_client_that_leaves_a_pinged_stream_cancels_its_model() -> None:
    finished: dict[str, float] = {}
    app, calls = slow_app(finished)
    async with serving(app, grpc_port=None, sse_ping_interval_s=0.05) as server, client(server.http_port) as http:
        async with http.stream("POST", "/slow", json={"chunks": ["never"], "pause": 60, "stream": True}) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                assert line in (PING, "")
                if line == PING:
                    break
        left = time.monotonic()
        await until(lambda: "slow" in finished and server.lifecycle.active == 0, timeout=10)
        assert finished["slow"] - left < 3
    assert [(c.status, c.messages) for c in calls.ended] == [(Status.CANCELLED, 0)]


async def test_the_end_of_the_grace_period_ends_a_pinged_stream_with_an_error_event() -> None:
    app, _ = slow_app()
    async with serving(app, grpc_port=None, sse_ping_interval_s=0.05) as server, client(server.http_port) as http:
        streaming = asyncio.create_task(frames(http, "/slow", {"chunks": ["never"], "pause": 60, "stream": True}))
        await until(lambda: server.lifecycle.active == 1)
        await asyncio.sleep(0.2)
        await server.stop(grace_period=0.3)
        status, got = await streaming
    assert status == 200 and got[0] == PING and set(got[:-2]) == {PING} and got[-1] == DONE
    assert json.loads(got[-2].removeprefix("data: "))["error"]["status"] == "UNAVAILABLE"


class Recording(httpx2.AsyncBaseTransport):
    """The ``openai`` client's own transport, keeping a copy of every answer's bytes as they arrive."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.answers: list[bytearray] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        received = bytearray()
        self.answers.append(received)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        stream: httpx2.AsyncByteStream = response.stream

        class Copied(httpx2.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in stream:
                    received.extend(chunk)
                    yield chunk

            async def aclose(self) -> None:
                await stream.aclose()

        return httpx2.Response(response.status_code, headers=response.headers, stream=Copied(), request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_openai_client_ignores_pings_on_the_llm_routes(tiny_dir: Path) -> None:
    # One sequence at a time: a stream queued behind a long request waits for its first token,
    # pinged every 10 ms; its chunks must still be the greedy answer, token for token.
    service = LLMService(tiny_dir, EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=1))
    engine = service.door.client
    recording = Recording()
    async with (
        serving(service.app, grpc_port=None, sse_ping_interval_s=0.01) as server,
        httpx2.AsyncClient(transport=recording, timeout=60) as http,
        openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="-", max_retries=0, http_client=http
        ) as api,
        client(server.http_port) as native,
    ):

        async def queued(stream: Callable[[], Awaitable[T]]) -> T:
            """``stream()`` sent while the engine's one sequence is a long request."""
            body = {"prompt": "wait", "max_tokens": 40, "ignore_eos": True}
            blocker = asyncio.create_task(native.post("/generate", json=body))
            await until(lambda: engine.outstanding == 1)
            try:
                return await stream()
            finally:
                assert (await blocker).status_code == 200

        greedy: dict[str, Any] = {"model": "tiny-llama", "max_tokens": 8, "temperature": 0}
        whole = await api.completions.create(prompt="Once upon", **greedy)

        async def completion() -> list[Completion]:
            return [c async for c in await api.completions.create(prompt="Once upon", stream=True, **greedy)]

        chunks = await queued(completion)
        assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
        assert whole.usage is not None and len(chunks) == whole.usage.completion_tokens
        assert recording.answers[-1].startswith(b": ping\n\n")  # queued: the 200 began with a ping

        messages: list[Any] = [{"role": "user", "content": "Name a colour."}]
        chat = await api.chat.completions.create(messages=messages, **greedy)

        async def chat_stream() -> list[ChatCompletionChunk]:
            return [c async for c in await api.chat.completions.create(messages=messages, stream=True, **greedy)]

        deltas = await queued(chat_stream)
        assert deltas[0].choices[0].delta.role == "assistant"
        assert "".join(d.choices[0].delta.content or "" for d in deltas) == chat.choices[0].message.content
        assert recording.answers[-1].startswith(b": ping\n\n")

        body = {"prompt": "Once upon", "max_tokens": 8, "temperature": 0, "stream": True}
        status, got = await queued(lambda: frames(native, "/generate", body))
        assert status == 200 and got[0] == PING and got[-1] == DONE
        tokens = [json.loads(f.removeprefix("data: "))["token"] for f in got[:-1] if f != PING]
        assert "".join(tokens) == whole.choices[0].text
