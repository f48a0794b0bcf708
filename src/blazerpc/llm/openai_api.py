"""OpenAI-compatible routes over the same engine: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions``, streaming or not (as vLLM serves them; the ``openai`` SDK works).

Errors use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``, with the
statuses of the rest of the server: 422 for a bad request, 404 for an unknown model, 429
when the engine is full.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, Self

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from ..errors import BlazeError, Status
from ..http.sse import DONE, SSE_HEADERS
from ..lifecycle import Lifecycle
from .engine import TokenEvent
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .service import LLMService


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI fields not implemented here: accepted at their neutral values (clients send them), else refused.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "echo": (False,),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
}


class _Request(BaseModel):
    """Fields both endpoints share; unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    top_k: int = Field(0, ge=0, description="vLLM's extension: keep the k most likely tokens (0: all)")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate past the end-of-sequence token")
    frequency_penalty: float = 0
    presence_penalty: float = 0
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def refuse_unimplemented(self) -> Self:
        for name, neutral in NEUTRAL.items():
            if getattr(self, name) not in neutral:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported here (accepted: {neutral})")
        return self


class CompletionRequest(_Request):
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(16, ge=1)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: the rest of the context")
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of max_tokens")


SSE = "text/event-stream"


def error(status: Status, message: str, param: str | None = None) -> JSONResponse:
    """OpenAI's error body; an invalid request is 422, as everywhere on this server."""
    code = 422 if status is Status.INVALID_ARGUMENT else status.http_status
    kind = {Status.NOT_FOUND: "NotFoundError", Status.RESOURCE_EXHAUSTED: "RateLimitError"}
    body = {"message": message, "type": kind.get(status, "BadRequestError"), "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=code)


class OpenAIRoute(APIRoute):
    """Request validation errors in OpenAI's error body (clients show its message), still 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                problems = [(".".join(str(p) for p in e["loc"][1:]), e["msg"]) for e in exc.errors()]
                message = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
                return error(Status.INVALID_ARGUMENT, message, problems[0][0] if problems else None)

        return route


def sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def openai_router(service: LLMService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], route_class=OpenAIRoute)

    def model_name() -> str:
        return service.llm.info.model_name if service.llm is not None and service.llm.info else "loading"

    @router.get("/models")
    async def models() -> dict[str, Any]:
        """The served model, as OpenAI lists models."""
        return {"object": "list", "data": [{"id": model_name(), "object": "model", "owned_by": "blazerpc"}]}

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Text completion of ``prompt``; ``stream: true`` answers Server-Sent Events."""
        return await run(request, body, body.prompt, chat=False, max_tokens=body.max_tokens)

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        """The assistant's next message, through the model's chat template."""
        if service.tokenizer is None:
            return error(Status.UNAVAILABLE, "the model is still loading")
        try:
            prompt = service.tokenizer.apply_chat_template([m.model_dump() for m in body.messages])
        except ValueError as exc:
            return error(Status.INVALID_ARGUMENT, str(exc), "messages")
        return await run(request, body, prompt, chat=True, max_tokens=body.max_completion_tokens or body.max_tokens)

    async def run(request: Request, body: _Request, prompt: str, chat: bool, max_tokens: int | None) -> Response:
        lifecycle: Lifecycle = request.app.state.lifecycle
        if lifecycle.draining:
            return error(Status.UNAVAILABLE, "server is shutting down")
        if body.model != model_name():
            return error(Status.NOT_FOUND, f"The model `{body.model}` does not exist; this server has `{model_name()}`")
        if service.llm is None or service.tokenizer is None:
            return error(Status.UNAVAILABLE, "the model is still loading")
        prompt_ids = service.tokenizer.encode(prompt)
        room = service.max_len - len(prompt_ids)
        if room < 1:
            message = f"the prompt is {len(prompt_ids)} tokens; the context holds {service.max_len}"
            return error(Status.INVALID_ARGUMENT, message, "messages" if chat else "prompt")
        stop = [body.stop] if isinstance(body.stop, str) else body.stop or []
        try:
            params = SamplingParams(
                min(max_tokens or room, room), body.temperature, body.top_p, body.top_k, body.seed, tuple(stop),
                body.ignore_eos,
            )  # fmt: skip
        except ValueError as exc:
            return error(Status.INVALID_ARGUMENT, str(exc))
        answer = Answer(model_name(), chat, len(prompt_ids))
        tracked = lifecycle.track()  # shutdown waits for the answer, within its grace period
        tracked.__enter__()
        streaming = False
        try:
            events = service.llm.generate(prompt_ids, params)
            first = await anext(events)  # errors (a full engine) become statuses, not broken streams
            if not body.stream:
                return JSONResponse(await answer.whole(first, events))
            usage = body.stream_options is not None and body.stream_options.include_usage
            streaming = True  # from here the stream ends the tracking
            chunks = answer.stream(first, events, usage, tracked.__exit__)
            return StreamingResponse(chunks, media_type=SSE, headers=SSE_HEADERS)
        except BlazeError as exc:
            return error(exc.status, exc.message)
        finally:
            if not streaming:
                tracked.__exit__()

    return router


class Answer:
    """Shapes one request's token events as OpenAI chunks or as one completion."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int) -> None:
        self.model, self.chat, self.prompt_tokens = model, chat, prompt_tokens
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.completion_tokens = 0

    def envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}

    async def whole(self, first: TokenEvent, rest: AsyncIterator[TokenEvent]) -> dict[str, Any]:
        parts, reason = [first.text], first.finish_reason
        self.completion_tokens = 1
        async for event in rest:
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

    async def stream(
        self, first: TokenEvent, rest: AsyncGenerator[TokenEvent], usage: bool, done: Callable[[], object]
    ) -> AsyncIterator[bytes]:
        """The chunks; however the stream ends, the request is closed (an abort if unfinished), then ``done()``."""
        chunks = self._chunks(first, rest, usage)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
            await rest.aclose()
            done()

    async def _chunks(self, first: TokenEvent, rest: AsyncIterator[TokenEvent], usage: bool) -> AsyncGenerator[bytes]:
        if self.chat:  # the role comes first, on its own
            yield sse(self.envelope([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}], True))
        event: TokenEvent | None = first
        while event is not None:
            self.completion_tokens += 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": event.finish_reason}
            if self.chat:
                choice["delta"] = {"content": event.text}
            else:
                choice |= {"text": event.text, "logprobs": None}
            yield sse(self.envelope([choice], chunk=True))
            event = await anext(rest, None)
        if usage:
            yield sse(self.envelope([], chunk=True) | {"usage": self.usage()})
        yield DONE
