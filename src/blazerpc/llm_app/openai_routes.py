"""OpenAI-compatible routes over the front door: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions``, streaming or not (as vLLM serves them; the ``openai`` SDK works).

Errors, here and from the server itself under ``/v1`` (validation, 413, 503 while draining),
use OpenAI's error object (``openai_error_body``) with the server's statuses: 422 for a bad
request, 404 for an unknown model, 429 when the engine is full, 503 while it restarts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ..errors import BlazeError, Status, shorten
from ..http.sse import EventStream, sse_event
from ..llm.protocol import TokenEvent
from .front_door import FrontDoor, Generation
from .openai_schemas import ChatRequest, CompletionRequest, OpenAIRequest

# OpenAI's error types by status; any other 4xx is "invalid_request_error", any 5xx "server_error".
_TYPES = {
    Status.UNAUTHENTICATED: "authentication_error",
    Status.PERMISSION_DENIED: "permission_error",
}
_CODES = {Status.NOT_FOUND: "model_not_found", Status.UNAUTHENTICATED: "invalid_api_key"}  # as OpenAI's


def openai_error_body(error: BlazeError) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``, where ``param``
    and ``code`` are strings or null (never ``""`` or the HTTP status as a number)."""
    kind = _TYPES.get(error.status, "invalid_request_error" if error.status.http_status < 500 else "server_error")
    code = _CODES.get(error.status)
    if error.status is Status.RESOURCE_EXHAUSTED and error.retry_after is not None:
        # A limit to retry after (the engine is full) is OpenAI's request rate limit; one without
        # (a body over the size limit, 413) is a bad request.
        kind, code = "requests", "rate_limit_exceeded"
    return {"error": {"message": error.message, "type": kind, "param": error.param or None, "code": code}}


def openai_router(door: FrontDoor) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

    @router.get("/models")
    async def models() -> dict[str, Any]:
        """The served model, as OpenAI lists models."""
        return {"object": "list", "data": [{"id": door.model_name, "object": "model", "owned_by": "blazerpc"}]}

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Response:
        """Text completion of ``prompt``; ``stream: true`` answers Server-Sent Events."""
        check_model(body)
        start = partial(door.generate, body.prompt, max_tokens=body.max_tokens, **body.sampling())
        return await respond(body, Answer(door.model_name, chat=False), start)

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest) -> Response:
        """The assistant's next message, through the model's chat template."""
        check_model(body)
        max_tokens = body.max_completion_tokens or body.max_tokens
        start = partial(door.generate, body.template_messages(), max_tokens=max_tokens, **body.sampling())
        return await respond(body, Answer(door.model_name, chat=True), start)

    def check_model(body: OpenAIRequest) -> None:
        if body.model != door.model_name:
            message = f"The model `{shorten(body.model)}` does not exist; this server has `{door.model_name}`"
            raise BlazeError(Status.NOT_FOUND, message, param="model")

    return router


async def respond(body: OpenAIRequest, answer: Answer, start: Callable[[], Awaitable[Generation]]) -> Response:
    """The whole answer, or its event stream (``EventStream`` decides when it starts and pings it)."""
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return EventStream(answer.stream(start, usage), "an OpenAI stream", openai_error_body)
    generation = await start()
    try:
        return JSONResponse(await answer.whole(generation))
    finally:
        await generation.aclose()


class Answer:
    """Shapes one request's token events as OpenAI chunks or as one completion."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.prompt_tokens = self.completion_tokens = 0

    def envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}

    async def whole(self, generation: Generation) -> dict[str, Any]:
        self.prompt_tokens = generation.prompt_tokens
        parts, reason = [], None
        async for event in generation:
            parts.append(event.text)
            reason = event.finish_reason
            self.completion_tokens += 1
        text = "".join(parts)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason or "length"}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        return self.envelope([choice], chunk=False) | {"usage": self.usage()}

    async def stream(self, start: Callable[[], Awaitable[Generation]], usage: bool) -> AsyncGenerator[bytes]:
        """The chunks, from the first token on (the chat role's chunk waits for it, so an error
        before it is a real status); ``EventStream`` sends an error after it and ``[DONE]``."""
        generation = await start()
        self.prompt_tokens = generation.prompt_tokens
        try:
            event: TokenEvent | None = await anext(generation.events)
            if self.chat:  # the role comes first, on its own
                yield sse_event(
                    self.envelope([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}], True)
                )
            while event is not None:
                self.completion_tokens += 1
                choice: dict[str, Any] = {"index": 0, "finish_reason": event.finish_reason}
                if self.chat:
                    choice["delta"] = {"content": event.text}
                else:
                    choice |= {"text": event.text, "logprobs": None}
                yield sse_event(self.envelope([choice], chunk=True))
                event = await anext(generation.events, None)
            if usage:
                yield sse_event(self.envelope([], chunk=True) | {"usage": self.usage()})
        finally:
            await generation.aclose()
