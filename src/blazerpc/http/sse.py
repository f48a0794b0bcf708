"""Server-Sent Events: ``data: <json>`` per event, then ``data: [DONE]``, for every streaming route.

``EventStream`` sends the events of an async iterator as they come. A client that disconnects
cancels the iterator at once, and leaving closes it (its ``finally`` runs: an LLM request is
aborted). ``model_events`` is a streaming model's iterator: an error before the first chunk is a
real status; one after the stream started is a last ``data: {"error": ...}`` event, then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..context import record_error
from ..errors import status_of
from ..registry import ModelInfo
from ..runtime import YIELD_EVERY, Runtime
from .errors import blaze_error_body

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class Events(Protocol):
    """Framed events to send, and ``aclose`` to release what produces them (called once sending ends)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class EventStream(Response):
    """Streams ``events`` (already framed bytes) as ``text/event-stream``."""

    media_type = "text/event-stream"

    def __init__(self, events: Events, headers: Mapping[str, str] = SSE_HEADERS) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    sent = 0
                    async for body in self.events:
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        sent += 1
                        if sent % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            await self.events.aclose()  # even if the stream never started


async def model_events(
    model: ModelInfo, kwargs: dict[str, Any], runtime: Runtime, to_json: Callable[[Any], Any]
) -> Events:
    """A streaming model's chunks as SSE events, started here and run to its first chunk.

    An error before the first chunk raises from this call, so the client gets a real status
    (429, 422, 503) rather than a 200 stream that holds only an error.
    """
    stack = AsyncExitStack()
    try:
        items = await stack.enter_async_context(runtime.stream(model, kwargs))
        first = await anext(items, _END)
    except BaseException:
        await stack.aclose()
        raise
    return _ModelEvents(_frames(model, first, items, to_json), stack)


_END = object()


class _ModelEvents:
    def __init__(self, frames: AsyncGenerator[bytes], stack: AsyncExitStack) -> None:
        self.frames, self.stack = frames, stack

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.frames

    async def aclose(self) -> None:
        await self.frames.aclose()
        await self.stack.aclose()  # closes the model's generator: its ``finally`` runs


async def _frames(
    model: ModelInfo, first: Any, items: AsyncIterator[Any], to_json: Callable[[Any], Any]
) -> AsyncGenerator[bytes]:
    try:
        if first is not _END:
            yield sse_event(to_json(first))
            async for item in items:
                yield sse_event(to_json(item))
    except Exception as exc:
        error = status_of(exc, f"model {model.name!r}")
        record_error(error)
        yield sse_event(blaze_error_body(error))
    yield DONE
