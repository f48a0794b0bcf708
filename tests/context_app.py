"""An app whose models read their ``Context``, and the gRPC plumbing to call it with raw metadata."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from grpclib import GRPCError
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod

from blazerpc import BlazeApp, BlazeError, Context, Status
from blazerpc.protobuf.descriptors import Schema, method_path, request_name, response_name

log = logging.getLogger("tests.context_app")


@dataclass
class Caller:
    request_id: str
    transport: str
    method: str
    tenant: str
    peer: str
    remaining: float


@dataclass
class Seen:
    """What the models saw: ``cancelled[model]`` as their ``finally`` found it."""

    cancelled: dict[str, bool] = field(default_factory=dict)
    contexts: list[Context] = field(default_factory=list)


def make_context_app(seen: Seen | None = None) -> BlazeApp:
    seen = seen or Seen()
    app = BlazeApp("ctx")

    @app.model("whoami")
    def whoami(name: str, ctx: Context) -> Caller:
        """Runs in a worker thread: its log line still carries the request id."""
        log.info("whoami %s", name)
        ctx.set_header("x-served-by", name)
        seen.contexts.append(ctx)
        remaining = ctx.time_remaining()
        return Caller(
            request_id=ctx.request_id,
            transport=ctx.transport,
            method=ctx.method,
            tenant=ctx.metadata.get("x-tenant", ""),
            peer=ctx.peer or "",
            remaining=-1.0 if remaining is None else remaining,
        )

    @app.model("tokens", streaming=True)
    async def tokens(n: int, ctx: Context, delay: float = 0.0) -> AsyncIterator[str]:
        ctx.set_header("x-stream", "yes")  # before the first chunk: an HTTP header too
        try:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                yield f"t{i}"
        finally:
            seen.cancelled["tokens"] = ctx.cancelled

    @app.model("wait")
    def wait(seconds: float, ctx: Context) -> bool:
        """A sync function that stops early when its call is cancelled."""
        end = time.monotonic() + seconds
        while not ctx.cancelled and time.monotonic() < end:
            time.sleep(0.01)
        seen.cancelled["wait"] = ctx.cancelled
        return ctx.cancelled

    @app.model("refuse")
    def refuse(why: str, ctx: Context) -> str:
        ctx.set_header("x-why", why)
        raise BlazeError(Status.PERMISSION_DENIED, f"refused: {why}")

    @app.model("upper", batching=True, batch_timeout_ms=50)
    def upper(text: str, ctx: Context) -> str:
        contexts: list[Context] = ctx  # type: ignore[assignment]  # batched: one per request
        return [f"{t.upper()}:{c.request_id}" for t, c in zip(text, contexts, strict=True)]  # type: ignore[return-value]

    return app


@dataclass
class GrpcReply:
    initial: dict[str, Any]
    messages: list[Any]
    trailing: dict[str, Any]
    error: GRPCError | None = None


async def grpc_call(
    port: int,
    app: BlazeApp,
    name: str,
    request: dict[str, Any],
    metadata: dict[str, str] | None = None,
    timeout: float | None = None,
) -> GrpcReply:
    """Call ``name`` with raw metadata; the reply's metadata and messages, or the error."""
    model = app.registry[name]
    schema = Schema.of(app.registry)
    request_cls = schema.message_class(request_name(model))
    reply_cls = schema.message_class(response_name(model))
    kind = UnaryStreamMethod if model.streaming else UnaryUnaryMethod
    channel = Channel("127.0.0.1", port)
    messages: list[Any] = []
    error = None
    try:
        method = kind(channel, method_path(model), request_cls, reply_cls)  # type: ignore[operator]
        async with method.open(metadata=metadata, timeout=timeout) as stream:
            await stream.send_message(request_cls(**request), end=True)
            try:
                while (message := await stream.recv_message()) is not None:
                    messages.append(message)
                await stream.recv_trailing_metadata()
            except GRPCError as exc:
                error = exc
        return GrpcReply(dict(stream.initial_metadata or {}), messages, dict(stream.trailing_metadata or {}), error)
    finally:
        channel.close()
