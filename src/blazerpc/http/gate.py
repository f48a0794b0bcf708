"""The door every HTTP request passes: a body size limit, refusal while draining, in-flight tracking.

A body over the limit gets 413 at once: from its ``Content-Length`` before a byte of it is
read, or, sent chunked, as soon as the bytes read pass the limit. Requests that do work (any
method but GET, HEAD and OPTIONS) are counted in flight for the graceful shutdown, for as long
as their answer streams, and refused with 503 once the server drains.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BlazeError, Status
from ..lifecycle import Lifecycle
from .errors import ErrorResponder

READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


class _BodyTooLarge(BaseException):
    """A BaseException: FastAPI turns any Exception raised while it reads a body into a 400."""


class RequestGate:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, errors: ErrorResponder, max_body_bytes: int) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.errors = errors
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(path, self._too_large(), scope, receive, send, 413)
            return
        if scope["method"] in READ_ONLY:
            await self.app(scope, receive, send)
            return
        if self.lifecycle.draining:
            await self._refuse(path, BlazeError(Status.UNAVAILABLE, "server is shutting down"), scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with self.lifecycle.track():
            try:
                await self.app(scope, counted_receive, watched_send)
            except _BodyTooLarge:
                if started:
                    raise
                await self._refuse(path, self._too_large(), scope, receive, send, 413)

    def _too_large(self) -> BlazeError:
        return BlazeError(Status.RESOURCE_EXHAUSTED, f"request body is larger than {self.max_body_bytes} bytes")

    async def _refuse(
        self, path: str, error: BlazeError, scope: Scope, receive: Receive, send: Send, status_code: int | None = None
    ) -> None:
        response = self.errors.response(path, error, status_code)
        response.headers["Connection"] = "close"  # the unread body stays unread
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
