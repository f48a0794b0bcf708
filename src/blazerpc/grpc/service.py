"""The ``blazerpc.InferenceService`` handlers, one per registered model."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from grpclib import GRPCError
from grpclib.const import Cardinality, Handler
from grpclib.const import Status as GStatus
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from grpclib.server import Stream

from ..context import CURRENT, Context
from ..errors import BlazeError, Status, status_of
from ..lifecycle import Lifecycle
from ..protobuf.codec import encoder, request_decoder
from ..protobuf.descriptors import Schema, method_path, request_name, response_name
from ..registry import ModelInfo, Registry
from ..runtime import YIELD_EVERY, Runtime
from ..schema import ListOf, Scalar, Struct
from .calls import cancelled_status, grpc_context, send_initial_metadata, send_trailers, status_of_grpc

log = logging.getLogger("blazerpc.grpc")

Invoke = Callable[[ModelInfo, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class MessageLimits:
    """A request message's largest size, and the longest wait for its next bytes."""

    max_bytes: int = 32 * 2**20
    timeout_s: float = 30.0


class InferenceService:
    """A grpclib servable: ``__mapping__`` gives ``{path: Handler}`` for every model."""

    def __init__(
        self,
        registry: Registry,
        schema: Schema,
        runtime: Runtime,
        lifecycle: Lifecycle,
        invoke: Invoke,
        limits: MessageLimits = MessageLimits(),
    ) -> None:
        self.limits = limits
        self.registry = registry
        self.schema = schema
        self.runtime = runtime
        self.lifecycle = lifecycle
        self.invoke = invoke

    def __mapping__(self) -> dict[str, Handler]:
        mapping = {}
        for model in self.registry:
            request_cls = self.schema.message_class(request_name(model))
            reply_cls = self.schema.message_class(response_name(model))
            if model.streaming:
                func, cardinality = self._streaming(model), Cardinality.UNARY_STREAM
            else:
                func, cardinality = self._unary(model), Cardinality.UNARY_UNARY
            mapping[method_path(model)] = Handler(func, cardinality, request_cls, reply_cls)
        return mapping

    def reply_encoder(self, model: ModelInfo) -> Callable[[Any], Any]:
        encode = encoder(self.schema.descriptor(response_name(model)))
        output = model.signature.output
        plain = isinstance(output, Scalar) or (isinstance(output, ListOf) and isinstance(output.item, Scalar))
        reply_cls = encode.cls

        def encode_reply(value: Any) -> Any:
            try:
                if plain:  # the common case, as cheap as a hand-written servicer
                    try:
                        return reply_cls(result=value)
                    except (TypeError, ValueError):
                        return encode({"result": value})  # raises with the field named
                return encode(value if isinstance(output, Struct) else {"result": value})
            except BlazeError as exc:  # the model returned something its hints do not allow
                raise RuntimeError(f"model {model.name!r} returned a bad value: {exc.message}") from None

        return encode_reply

    def _unary(self, model: ModelInfo) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        decode = request_decoder(model.signature.inputs)
        encode_reply = self.reply_encoder(model)

        async def handle(stream: Stream[Any, Any], ctx: Context) -> None:
            with _grpc_status(model, self.lifecycle, ctx), self.lifecycle.track():
                kwargs = await self._request(stream, ctx, decode, model.signature.context)
                reply = encode_reply(await self.invoke(model, kwargs))
            await send_initial_metadata(stream, ctx)
            await stream.send_message(reply)
            await send_trailers(stream, ctx)

        return self._watched(model, handle)

    def _streaming(self, model: ModelInfo) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        decode = request_decoder(model.signature.inputs)
        encode_reply = self.reply_encoder(model)

        async def handle(stream: Stream[Any, Any], ctx: Context) -> None:
            with _grpc_status(model, self.lifecycle, ctx), self.lifecycle.track():
                kwargs = await self._request(stream, ctx, decode, model.signature.context)
                async with self.runtime.stream(model, kwargs) as items:
                    async for item in items:
                        if not ctx.messages:
                            await send_initial_metadata(stream, ctx)
                        await stream.send_message(encode_reply(item))
                        ctx.messages += 1
                        if ctx.messages % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
            await send_trailers(stream, ctx)

        return self._watched(model, handle)

    async def _request(
        self, stream: Stream[Any, Any], ctx: Context, decode: Callable[[Any], dict[str, Any]], inject: str | None
    ) -> dict[str, Any]:
        """The middleware's ``before``, then the request message as the model's keyword arguments
        (``inject``: the parameter that takes the context, if the model has one)."""
        if self.lifecycle.middleware.has_before:
            await self.lifecycle.middleware.before(ctx)
        kwargs = decode(await _recv(stream, self.limits))
        if inject is not None:
            kwargs[inject] = ctx
        return kwargs

    def _watched(
        self, model: ModelInfo, handle: Callable[[Stream[Any, Any], Context], Awaitable[None]]
    ) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        """``handle`` as one call: its context current, its status noted, the middleware's ``after`` run."""
        path, middleware = method_path(model), self.lifecycle.middleware

        async def watched(stream: Stream[Any, Any]) -> None:
            ctx = grpc_context(stream, path, model)
            token = CURRENT.set(ctx)
            status = Status.UNKNOWN
            try:
                await handle(stream, ctx)
                status = Status.OK
            except GRPCError as exc:
                status = status_of_grpc(exc)
                await send_trailers(stream, ctx, exc)
            except (asyncio.CancelledError, StreamTerminatedError):
                status = cancelled_status(ctx)
                raise
            finally:
                ctx.finish(status)
                middleware.after(ctx)
                CURRENT.reset(token)

        return watched


async def _recv(stream: Stream[Any, Any], limits: MessageLimits) -> Any:
    """The request message, refused by its length prefix, before it is read, if it is too large.

    grpclib's ``recv_message`` reads whatever length the prefix announces; this is its
    body (grpclib 0.4, pinned) with the check added.
    """
    try:
        async with asyncio.timeout(limits.timeout_s):
            prefix = await stream._stream.recv_data(5)
            if not prefix:
                raise BlazeError(Status.INVALID_ARGUMENT, "no request message")
            compressed, size = struct.unpack(">?I", prefix)
            if compressed:
                raise BlazeError(Status.UNIMPLEMENTED, "compressed messages are not supported")
            if size > limits.max_bytes:
                message = f"request message is {size} bytes; the limit is {limits.max_bytes} (--max-body-mb)"
                raise BlazeError(Status.RESOURCE_EXHAUSTED, message)
            data = await stream._stream.recv_data(size)
    except TimeoutError:
        message = f"the request message stalled: nothing came for {limits.timeout_s:g} s"
        raise BlazeError(Status.DEADLINE_EXCEEDED, message) from None
    if len(data) != size:
        raise BlazeError(Status.INVALID_ARGUMENT, f"request message ended after {len(data)} of {size} bytes")
    try:
        return stream._codec.decode(data, stream._recv_type)
    except DecodeError as exc:
        raise BlazeError(Status.INVALID_ARGUMENT, f"cannot decode request: {exc}") from None


class _grpc_status:
    """The error boundary (``status_of``) as a gRPC status; the call's context keeps the error."""

    def __init__(self, model: ModelInfo, lifecycle: Lifecycle, ctx: Context) -> None:
        self.what = f"model {model.name!r}"
        self.lifecycle = lifecycle
        self.ctx = ctx

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, (GRPCError, StreamTerminatedError, ProtocolError)):
            return
        if isinstance(exc, asyncio.CancelledError) and not self.lifecycle.draining:
            return  # the client cancelled: nobody to tell
        if isinstance(exc, Exception | asyncio.CancelledError):
            error = self.ctx.error = status_of(exc, self.what)
            raise GRPCError(GStatus(error.status.value), error.message) from None
