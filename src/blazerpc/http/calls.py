"""One HTTP call's ``Context``: made from the ASGI scope, and what it adds to the answer.

Every answer gets ``x-request-id`` and the headers the model set (``ctx.set_header``). The
gate (``gate.py``) makes the context, runs the middleware around the call, and tells the
context how the answer went: its status code, whether it is an event stream, and how many
events it sent.
"""

from __future__ import annotations

from starlette.types import Message, Scope

from ..context import REQUEST_ID, Context, new_request_id
from ..errors import Status, status_for_http

#: Probes: no middleware, no request id, never refused for want of an API key.
PROBES = frozenset({"/health", "/ready"})
_REQUEST_ID = REQUEST_ID.encode()


def http_context(scope: Scope) -> Context:
    headers = scope["headers"]
    incoming = None
    for name, value in headers:
        if name == _REQUEST_ID:
            incoming = value.decode("latin-1")
            break
    path = scope["path"]
    return Context(
        "http",
        f"{scope['method']} {path}",
        path,
        new_request_id(incoming),
        raw_metadata=headers,
        peer=scope.get("client"),
    )


def start_answer(ctx: Context, message: Message, event_stream: bool) -> Message:
    """The ``http.response.start`` message with the call's headers added; the context learns the code."""
    extra = [(_REQUEST_ID, ctx.request_id.encode())]
    extra += [(name.encode(), value.encode()) for name, value in ctx.response_headers]
    ctx.http_status = message["status"]
    ctx.streaming = event_stream
    return {**message, "headers": [*message.get("headers", ()), *extra]}


def final_status(ctx: Context) -> Status:
    """How the call ended: the error its client was told, a client that left, or the answer's code."""
    if ctx.error is not None:
        return ctx.error.status
    if ctx.cancelled:
        return Status.CANCELLED
    if ctx.http_status is None:
        return Status.UNKNOWN
    return status_for_http(ctx.http_status)
