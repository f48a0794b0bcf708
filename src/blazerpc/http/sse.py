"""Server-Sent Events: one ``data: <json>`` event per chunk, then ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import BlazeError, Status, short_error
from ..lifecycle import Lifecycle
from ..registry import ModelInfo
from ..runtime import YIELD_EVERY, Runtime

log = logging.getLogger("blazerpc.http")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"
Emit = Callable[[bytes], Awaitable[None]]


def error_body(status: Status, message: str) -> dict[str, Any]:
    return {"error": {"status": status.name, "code": int(status), "message": message}}


def internal_message(model: ModelInfo, exc: BaseException) -> str:
    return f"model {model.name!r} failed: {short_error(exc)}"


def event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class SSEResponse(Response):
    """Runs a streaming model and sends each chunk as it comes.

    The model's generator is driven here directly (no generator in between); a client
    that disconnects cancels it at once, and leaving closes it, so its ``finally`` runs.
    An error after the stream started is sent as a last ``data: {"error": ...}`` event.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        model: ModelInfo,
        kwargs: dict[str, Any],
        runtime: Runtime,
        lifecycle: Lifecycle,
        to_json: Callable[[Any], Any],
        headers: Mapping[str, str] = SSE_HEADERS,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.model, self.kwargs, self.runtime, self.lifecycle, self.to_json = model, kwargs, runtime, lifecycle, to_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def emit(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.produce(emit)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()

            group.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

    async def produce(self, emit: Emit) -> None:
        to_json, dumps = self.to_json, json.dumps
        try:
            with self.lifecycle.track():
                async with self.runtime.stream(self.model, self.kwargs) as items:
                    sent = 0
                    async for item in items:
                        await emit(f"data: {dumps(to_json(item), ensure_ascii=False)}\n\n".encode())
                        sent += 1
                        if sent % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
        except BlazeError as exc:
            await emit(event(error_body(exc.status, exc.message)))
        except Exception as exc:
            log.exception("model %r failed", self.model.name)
            await emit(event(error_body(Status.INTERNAL, internal_message(self.model, exc))))
        await emit(DONE)
