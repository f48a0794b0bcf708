"""gRPC calls that came through Ray Serve's gRPC proxy, answered in the replica.

Ray's proxy decodes the request with the generated stubs (``stubs.py``), and calls the replica
method named after the RPC (``PredictEcho``) with the message and a ``RayServegRPCContext``; the
replica returns (or, for a streaming model, yields) reply messages, which Ray serializes. Each
call gets what it gets under ``blaze serve``: a ``Context`` (request id, metadata, peer), the
middleware around it, the readiness count, the model run by the server's runtime or batcher,
the same reply encoding and the same error boundary (``status_of``). What differs is what Ray
lets through: the status and trailing metadata (the request id goes there), no initial
metadata, and no deadline (the client's deadline cancels the call at the proxy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from multidict import MultiDict

from ..context import CURRENT, REQUEST_ID, Context, new_request_id
from ..errors import BlazeError, Status, status_of
from ..grpc.service import InferenceService
from ..protobuf.codec import request_decoder
from ..protobuf.descriptors import Schema, build_file, method_path, response_name
from ..registry import ModelInfo, Registry
from ..runtime import YIELD_EVERY
from ..serving import BlazeServer

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class CallFailed(Exception):
    """Raised to Ray once the call's status is set on its gRPC context (a picklable stand-in)."""


class GrpcCalls:
    """The replica's side of every ``Predict<Model>`` method, for one running server."""

    def __init__(self, server: BlazeServer) -> None:
        self.server = server
        registry = server.app.registry
        # The reply encoding of blaze serve's own gRPC service (a struct result is the message,
        # anything else its ``result`` field), so the two cannot drift apart.
        schema = stubs_schema(registry)
        service = InferenceService(registry, schema, server.runtime, server.lifecycle, server.invoke)
        self.encoders: dict[str, Callable[[Any], Any]] = {m.name: service.reply_encoder(m) for m in registry}
        self.decoders = {m.name: request_decoder(m.signature.inputs) for m in registry}
        self.empty_replies = {m.name: schema.message_class(response_name(m))() for m in registry}

    async def unary(self, model: ModelInfo, request: Any, grpc_context: Any) -> Any:
        ctx = _context(model, grpc_context)
        token = CURRENT.set(ctx)
        try:
            with self.server.lifecycle.track():
                kwargs = await self._arguments(model, ctx, request)
                reply = self.encoders[model.name](await self.server.invoke(model, kwargs))
            _end(ctx, grpc_context)
            return reply
        except Exception as exc:
            # A status set on the context and an (empty) reply: grpcio sends the status alone.
            # Raising would do the same, with a traceback in the replica's and the proxy's logs.
            _failed(model, ctx, grpc_context, exc)
            return self.empty_replies[model.name]
        except asyncio.CancelledError:
            _cancelled(ctx)
            raise
        finally:
            self._finish(ctx)
            CURRENT.reset(token)

    async def stream(self, model: ModelInfo, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
        ctx = _context(model, grpc_context)
        token = CURRENT.set(ctx)
        encode = self.encoders[model.name]
        try:
            with self.server.lifecycle.track():
                kwargs = await self._arguments(model, ctx, request)
                async with self.server.runtime.stream(model, kwargs) as items:
                    async for item in items:
                        reply = encode(item)
                        ctx.messages += 1
                        _end(ctx, grpc_context)  # Ray sends the context with each message: the last one counts
                        yield reply
                        if ctx.messages % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
        except (GeneratorExit, asyncio.CancelledError):  # the client went away: Ray closes or cancels us
            _cancelled(ctx)
            raise
        except Exception as exc:
            # Ray sends a stream's status only with a message or an exception: raise, after the status.
            raise CallFailed(_failed(model, ctx, grpc_context, exc).message) from None
        finally:
            self._finish(ctx)
            CURRENT.reset(token)

    async def _arguments(self, model: ModelInfo, ctx: Context, request: Any) -> dict[str, Any]:
        middleware = self.server.lifecycle.middleware
        if middleware.has_before:
            await middleware.before(ctx)
        kwargs = self.decoders[model.name](request)
        if model.signature.context is not None:
            kwargs[model.signature.context] = ctx
        return kwargs

    def _finish(self, ctx: Context) -> None:
        if not ctx.duration_s:
            ctx.finish(ctx.error.status if ctx.error is not None else None)
        self.server.lifecycle.middleware.after(ctx)


def stubs_schema(registry: Registry) -> Schema:
    """The registry's schema read from the default descriptor pool, where the imported stubs put
    the same ``blazerpc.*`` messages: replies are then the stubs' classes, as requests are.
    (``Schema.of`` would add our own file beside the stubs', in a private pool that cannot take
    grpclib's reflection files in a Ray worker, where grpcio-reflection holds them already.)"""
    return Schema(build_file(registry), descriptor_pool.Default())


def _context(model: ModelInfo, grpc_context: Any) -> Context:
    metadata = MultiDict(grpc_context.invocation_metadata())
    incoming = metadata.get(REQUEST_ID)
    path = method_path(model)
    return Context(
        "grpc",
        path,
        path,
        new_request_id(incoming if isinstance(incoming, str) else None),
        raw_metadata=metadata,
        peer=_Peer(grpc_context.peer()),
        model=model.name,
        streaming=model.streaming,
    )


def _end(ctx: Context, grpc_context: Any) -> None:
    """The request id and the headers the model set, as trailing metadata."""
    grpc_context.set_trailing_metadata([(REQUEST_ID, ctx.request_id), *ctx.response_headers])


def _failed(model: ModelInfo, ctx: Context, grpc_context: Any, exc: Exception) -> BlazeError:
    """``exc`` through the error boundary; its status and message set on the call."""
    error = ctx.error = status_of(exc, f"model {model.name!r}")
    grpc_context.set_code(_GRPC_CODES[error.status.value])
    grpc_context.set_details(error.message)
    _end(ctx, grpc_context)
    return error


def _cancelled(ctx: Context) -> None:
    ctx.cancel()
    ctx.finish(Status.CANCELLED)


class _Peer:
    """A gRPC peer as grpcio writes it (``ipv4:127.0.0.1:5000``), read as grpclib's ``addr()``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def addr(self) -> tuple[str, int] | None:
        _, _, address = self.text.partition(":")
        host, _, port = address.rpartition(":")
        host = host.replace("%5B", "[").replace("%5D", "]").strip("[]")
        return (host, int(port)) if host and port.isdigit() else None
