"""The door every HTTP request passes, and the last word on what its client gets back.

- A body over the limit gets 413 at once: from its ``Content-Length`` before a byte of it is
  read, or, sent chunked, as soon as the bytes read pass the limit.
- A body must keep coming: a wait of ``body_timeout_s`` for its next piece is a 408.
- A JSON body is checked against what Python's parser lets through but JSON is not (NaN,
  Infinity, lone surrogates): 422, before any route sees it.
- Requests that do work (any method but GET, HEAD and OPTIONS) are counted in flight for the
  graceful shutdown, for as long as their answer streams, and refused with 503 once the server
  drains. Once such a request's body is read, a client that disconnects cancels it, whether its
  answer is streamed or not (an LLM request is aborted, not left generating for nobody).
- Whatever goes wrong, the client gets an answer in the route's error shape and a keep-alive
  connection stays usable: an unexpected exception is a JSON 500; the end of the grace period
  is a 503, or, in an event stream already under way, a last error event and ``[DONE]``.
- An event stream silent for ``sse_ping_interval_s`` is kept alive with ``: ping`` comments
  (``sse.EventStream`` sends them; the gate tells it the interval); they are not messages.
- Every request but the probes (``/health``, ``/ready``) is a call with a ``Context``: the
  middleware's ``before`` runs before its body is read (a ``BlazeError`` refuses it), ``after``
  once its answer has ended, refusals by the gate included; the answer carries ``x-request-id``.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import CURRENT, Context
from ..errors import BlazeError, Status, status_of
from ..lifecycle import Lifecycle
from .calls import PROBES, final_status, http_context, start_answer
from .errors import ErrorResponder
from .json_body import refuse_non_json
from .sse import DONE, PING, PING_INTERVAL, sse_event

READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
_NOT_MESSAGES = (DONE, PING)  # in an event stream, every other body is one streamed message


class _Refusal(BaseException):
    """A BaseException: FastAPI turns any Exception raised while it reads a body into a 400."""

    def __init__(self, error: BlazeError, status_code: int | None = None, close: bool = False) -> None:
        self.error, self.status_code, self.close = error, status_code, close


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        lifecycle: Lifecycle,
        errors: ErrorResponder,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
        sse_ping_interval_s: float = 0.0,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.errors = errors
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.sse_ping_interval_s = sse_ping_interval_s  # 0: never

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in PROBES:
            await self.serve(_Exchange(self, scope, receive, send, None))
            return
        scope[PING_INTERVAL] = self.sse_ping_interval_s  # read by the route's event stream, if it answers one
        ctx = http_context(scope)
        token = CURRENT.set(ctx)
        try:
            await self.serve(_Exchange(self, scope, receive, send, ctx))
        finally:
            ctx.finish(final_status(ctx))
            self.lifecycle.middleware.after(ctx)
            CURRENT.reset(token)

    async def serve(self, exchange: _Exchange) -> None:
        scope = exchange.scope
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await exchange.answer(self.too_large(), 413, close=True)  # the unread body stays unread
        elif scope["method"] in READ_ONLY:
            await exchange.run()
        elif self.lifecycle.draining:
            await exchange.answer(BlazeError(Status.UNAVAILABLE, "server is shutting down"), close=True)
        else:
            with self.lifecycle.track():
                await exchange.run()

    def too_large(self) -> BlazeError:
        return BlazeError(Status.RESOURCE_EXHAUSTED, f"request body is larger than {self.max_body_bytes} bytes")


class _Exchange:
    """One request through the gate: its body counted (and checked, if JSON), its answer watched."""

    def __init__(self, gate: RequestGate, scope: Scope, receive: Receive, send: Send, ctx: Context | None) -> None:
        self.gate, self.scope, self._receive, self._send, self.ctx = gate, scope, receive, send, ctx
        self.path: str = scope["path"]
        content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        self.json = content_type == "application/json" or content_type.endswith("+json")
        self.received = 0
        self.body_read = False
        self.started = self.complete = self.event_stream = False
        self.client_gone = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.task: asyncio.Task[object] | None = None

    async def run(self) -> None:
        task = self.task = asyncio.current_task()
        assert task is not None  # uvicorn runs each request in a task
        try:
            middleware = self.gate.lifecycle.middleware
            if self.ctx is not None and middleware.has_before:
                await middleware.before(self.ctx)  # a BlazeError refuses the call, answered below
            await self.gate.app(self.scope, self.receive, self.send)
        except _Refusal as refusal:
            await self.answer(refusal.error, refusal.status_code, refusal.close)
        except asyncio.CancelledError:
            if not (self.client_gone.is_set() or self.gate.lifecycle.draining):
                raise
            task.uncancel()
            if self.ctx is not None:
                self.ctx.cancel()
            if not self.client_gone.is_set():  # the grace period is over
                await self.answer(BlazeError(Status.UNAVAILABLE, "server shut down before the call finished"))
        except Exception as exc:
            # Routes answer their own errors (a JSON 500 included) and the exception still comes
            # here: it was logged then, and the client has its answer.
            if not self.complete:
                await self.answer(status_of(exc, f"{self.scope['method']} {self.path}"))
        finally:
            if self.watcher is not None:
                self.watcher.cancel()

    async def receive(self) -> Message:
        if self.body_read:  # all a route may still hear of is the client leaving
            await self.client_gone.wait()
            return {"type": "http.disconnect"}
        if not self.json:
            return self._count(await self._receive_body())
        chunks = []
        while True:
            message = self._count(await self._receive_body())
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            if self.body_read:
                break
        body = b"".join(chunks)
        try:
            refuse_non_json(body)
        except BlazeError as exc:
            raise _Refusal(exc) from None
        return {"type": "http.request", "body": body, "more_body": False}

    async def _receive_body(self) -> Message:
        try:
            async with asyncio.timeout(self.gate.body_timeout_s):
                return await self._receive()
        except TimeoutError:
            message = f"the request body stalled: nothing came for {self.gate.body_timeout_s:g} s"
            raise _Refusal(BlazeError(Status.DEADLINE_EXCEEDED, message), 408, close=True) from None

    def _count(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.gate.max_body_bytes:
                raise _Refusal(self.gate.too_large(), 413, close=True)
            if not message.get("more_body", False):
                self.body_read = True
                self.watcher = asyncio.create_task(self._watch())
        elif message["type"] == "http.disconnect":
            self._client_left()
        return message

    async def _watch(self) -> None:
        """After the body, the server's next message can only say the client left (or the answer ended)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.complete:
            self._client_left()
            if self.task is not None:
                self.task.cancel()

    def _client_left(self) -> None:
        if self.ctx is not None:
            self.ctx.cancel()  # before the task is cancelled: the model's ``finally`` sees it
        self.client_gone.set()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.event_stream = any(
                name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                for name, value in message.get("headers", [])
            )
            if self.ctx is not None:
                message = start_answer(self.ctx, message, self.event_stream)
        elif message["type"] == "http.response.body":
            if not message.get("more_body", False):
                self.complete = True
            elif self.event_stream and self.ctx is not None and message.get("body") not in _NOT_MESSAGES:
                self.ctx.messages += 1
        await self._send(message)

    async def answer(self, error: BlazeError, status_code: int | None = None, close: bool = False) -> None:
        """Tell the client of ``error`` in the route's error shape, however far its answer got."""
        if self.complete or self.client_gone.is_set():
            return
        if self.ctx is not None:
            self.ctx.error = error
        body = self.gate.errors.body_for(self.path)(error)
        if not self.started:
            response = self.gate.errors.response(self.path, error, status_code)
            if close:
                response.headers["Connection"] = "close"
            await response(self.scope, self._receive, self.send)
        elif self.event_stream:
            await self.send({"type": "http.response.body", "body": sse_event(body) + DONE, "more_body": False})
        else:
            raise RuntimeError(f"{self.path}: answer broken off after it started: {error.message}")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
