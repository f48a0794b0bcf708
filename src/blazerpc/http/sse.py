"""Server-Sent Events: ``data: <json>`` per event, then ``data: [DONE]``, for every streaming route.

``EventStream`` sends the events of an async generator as they come, and is where every SSE
route's rules live:

- The 200 starts with the first event, so an error before it is a real status (429, 422, 503)
  rather than a 200 stream that holds only an error. An error after the stream started is a last
  event in the route's error shape, then ``[DONE]``.
- A stream silent for the ping interval gets a ``: ping`` comment (one that SSE clients ignore),
  and another after each further interval of silence; one still waiting for its first event
  (queued, a long prefill) starts its 200 with the first ping. The gate puts the interval in the
  scope (``PING_INTERVAL``; 0 or absent: never).
- A client that disconnects cancels the generator at once, and leaving closes it (its
  ``finally`` runs: an LLM request is aborted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..app import ErrorBody
from ..context import record_error
from ..errors import BlazeError, status_of
from ..registry import ModelInfo
from ..runtime import YIELD_EVERY, Runtime
from .errors import blaze_error_body

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
#: The scope key of the seconds of silence after which a stream is pinged (0: never).
PING_INTERVAL = "blazerpc.sse_ping_interval_s"


def sse_event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class EventStream(Response):
    """Streams ``events`` (framed ``data:`` events) as ``text/event-stream``, then ``[DONE]``.

    ``what`` names the stream in the log if it fails with an unexpected exception; an error after
    the stream started is sent as ``error_body(error)``.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[bytes],
        what: str,
        error_body: ErrorBody = blaze_error_body,
        headers: Mapping[str, str] = SSE_HEADERS,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.events, self.what, self.error_body = events, what, error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        line = _Line(send, self.raw_headers)
        interval: float = scope.get(PING_INTERVAL, 0.0)
        refused: BlazeError | None = None
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    nonlocal refused
                    refused = await self.stream(line)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                if interval > 0:
                    group.start_soon(line.keep_alive, interval)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            await self.events.aclose()  # even if the stream never started
        if refused is not None:
            raise refused  # nothing was sent: the route's exception handler answers its status

    async def stream(self, line: _Line) -> BlazeError | None:
        """Send every event, then ``[DONE]``; an error before anything was sent is returned."""
        sent = 0
        clock, send, events = time.monotonic, line.send, self.events
        while True:
            line.quiet_since = clock()
            try:
                body = await anext(events)
            except StopAsyncIteration:
                break
            except Exception as exc:
                error = status_of(exc, self.what)
                if not await line.quiet_end():
                    return error
                record_error(error)
                await line.body(sse_event(self.error_body(error)))
                break
            # What ``line.quiet_end()`` and ``line.body(body)`` do, inline: this runs per event.
            line.quiet_since = None
            if line.pinging is not None:
                await line.pinging
            if not line.started:
                await line.start()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            sent += 1
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await line.quiet_end()
        await line.body(DONE, more=False)
        return None


class _Line:
    """One stream's way to its client: starts the 200 once, and never sends a ping and an event at once.

    ``quiet_since`` is when the stream began waiting for its next event (None while it sends one):
    pings go out only then, and an event waits for a ping on its way out (``pinging``).
    """

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self.send, self.headers = send, headers
        self.started = False
        self.quiet_since: float | None = None
        self.pinging: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": self.headers})

    async def body(self, body: bytes, more: bool = True) -> None:
        message: Message = {"type": "http.response.body", "body": body, "more_body": more}
        if not self.started:
            await self.start()
        await self.send(message)

    async def quiet_end(self) -> bool:
        """The stream has something to send: no more pings until it waits again. Whether it started."""
        self.quiet_since = None
        if self.pinging is not None:
            await self.pinging
        return self.started

    async def keep_alive(self, interval: float) -> None:
        """Ping whenever the stream has waited ``interval`` seconds for its next event.

        One sleep per interval at most, never one per event: a fast stream only moves
        ``quiet_since`` forward, read when the sleep ends.
        """
        while True:
            quiet = self.quiet_since
            wait = interval if quiet is None else quiet + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            pinging = self.pinging = asyncio.get_running_loop().create_future()
            try:
                await self.body(PING)
            finally:
                self.pinging = None
                if not pinging.done():  # a stream cancelled while it waited cancels the future
                    pinging.set_result(None)
            if self.quiet_since is not None:  # still waiting: the silence starts again
                self.quiet_since = time.monotonic()


async def model_events(
    model: ModelInfo, kwargs: dict[str, Any], runtime: Runtime, to_json: Callable[[Any], Any]
) -> AsyncGenerator[bytes]:
    """A streaming model's chunks as SSE events; the model starts when the first one is awaited."""
    async with runtime.stream(model, kwargs) as items:
        async for item in items:
            yield sse_event(to_json(item))
