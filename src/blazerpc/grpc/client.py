"""``BlazeClient``: call models over gRPC, with or without the server's registry at hand."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from grpclib import GRPCError
from grpclib.client import Channel, Stream, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.exceptions import StreamTerminatedError
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from ..errors import BlazeError, InvalidArgument, Status
from ..protobuf.codec import encode, request_decoder, to_python
from ..protobuf.descriptors import SERVICE, SERVICE_FULL_NAME, Schema, output_fields
from ..registry import Registry, camel
from ..schema import Struct
from ..tls import client_context

# ssl.SSLError: TLS failed, e.g. the server's certificate is not one the client trusts.
_CONNECTION_ERRORS = (StreamTerminatedError, ConnectionError, ssl.SSLError)


@dataclass(frozen=True)
class _Method:
    path: str
    request: Descriptor
    reply: Descriptor
    streaming: bool
    decode: Callable[[Any], Any]


class BlazeClient:
    """An async gRPC client for a blazerpc server.

    ``registry=app.registry`` builds the schema locally; without it the client asks the
    server's reflection service once, on first use. ``timeout`` (seconds) is the deadline
    of every call; ``with_timeout`` gives a client sharing this one's connection. ``api_key``
    is sent with every call as ``authorization: Bearer <key>`` metadata.

    ``tls`` connects over TLS (h2 by ALPN): ``True`` trusts the system's CAs, a path trusts the
    CAs in that PEM file (e.g. the one that signed a private server's certificate), an
    ``ssl.SSLContext`` is used as it is. The server's certificate must name ``host``. For a
    server that requires client certificates (``--ssl-ca-certs``), ``certfile`` is the client's
    certificate chain (PEM) and ``keyfile`` its private key, if not in ``certfile``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 50051,
        *,
        registry: Registry | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
        tls: bool | str | ssl.SSLContext = False,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.timeout = timeout
        self.metadata = {"authorization": f"Bearer {api_key}"} if api_key is not None else None
        plain = tls is False and certfile is None and keyfile is None
        self.ssl = None if plain else client_context(tls, certfile, keyfile)
        self._channel: Channel | None = None
        self._methods: dict[str, _Method] | None = None

    async def __aenter__(self) -> BlazeClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            self._channel = Channel(self.host, self.port, ssl=self.ssl)
        return self._channel

    def with_timeout(self, timeout: float | None) -> BlazeClient:
        """A client with another deadline, sharing this one's connection and schema."""
        other = BlazeClient.__new__(BlazeClient)
        other.__dict__.update(self.__dict__)
        other._channel = self.channel
        other.timeout = timeout
        return other

    async def predict(self, name: str, /, **inputs: Any) -> Any:
        """Call a unary model and return its result."""
        method = await self._method(name, streaming=False)
        call = UnaryUnaryMethod(self.channel, method.path, _cls(method.request), _cls(method.reply))
        try:
            reply = await call(_request(method, name, inputs), timeout=self.timeout, metadata=self.metadata)
        except GRPCError as exc:
            raise _blaze_error(exc) from None
        except TimeoutError:
            raise self._deadline_error(name) from None
        except _CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from None
        return method.decode(reply)

    def stream(self, name: str, /, **inputs: Any) -> StreamCall:
        """Iterate over a streaming model's chunks: ``async for chunk in client.stream(...)``.

        Leaving ``async with client.stream(...) as chunks:`` or calling ``aclose()`` cancels
        the call on the server at once. A bare ``break`` cancels it only when the stream
        object is finalized (at once in CPython when nothing else refers to it).
        """
        return StreamCall(self._stream(name, inputs))

    async def _stream(self, name: str, inputs: dict[str, Any]) -> AsyncIterator[Any]:
        method = await self._method(name, streaming=True)
        request = _request(method, name, inputs)
        call = UnaryStreamMethod(self.channel, method.path, _cls(method.request), _cls(method.reply))
        stream: Stream[Any, Any] = call.open(timeout=self.timeout, metadata=self.metadata)
        ended = False
        try:
            await stream.__aenter__()
            await stream.send_message(request, end=True)
            while (reply := await stream.recv_message()) is not None:
                yield method.decode(reply)
            await stream.recv_trailing_metadata()
            ended = True
        except GRPCError as exc:
            ended = True
            raise _blaze_error(exc) from None
        except TimeoutError:
            raise self._deadline_error(name) from None
        except _CONNECTION_ERRORS as exc:
            ended = True
            raise _unavailable(exc) from None
        finally:
            with contextlib.suppress(*_CONNECTION_ERRORS, GRPCError):
                if not ended:
                    await stream.cancel()
                await stream.__aexit__(None, None, None)

    def _deadline_error(self, name: str) -> BlazeError:
        return BlazeError(Status.DEADLINE_EXCEEDED, f"call to {name!r} exceeded its {self.timeout}s deadline")

    async def _method(self, name: str, streaming: bool) -> _Method:
        if self._methods is None:
            self._methods = self._local_methods() if self.registry else await self._reflected_methods()
        method = self._methods.get(name) or self._methods.get(f"Predict{camel(name)}")
        if method is None:
            raise BlazeError(Status.NOT_FOUND, f"the server has no model {name!r}")
        if method.streaming != streaming:
            use = "stream()" if method.streaming else "predict()"
            raise BlazeError(
                Status.INVALID_ARGUMENT, f"model {name!r} is {'' if method.streaming else 'not '}streaming; use {use}"
            )
        return method

    def _local_methods(self) -> dict[str, _Method]:
        assert self.registry is not None
        schema = Schema.of(self.registry)
        service = schema.file_descriptor.services_by_name[SERVICE]
        methods = {}
        for model in self.registry:
            m = service.methods_by_name[f"Predict{model.camel}"]
            methods[model.name] = _Method(
                f"/{SERVICE_FULL_NAME}/{m.name}", m.input_type, m.output_type, model.streaming, _spec_decoder(model)
            )
        return methods

    async def _reflected_methods(self) -> dict[str, _Method]:
        stub = ServerReflectionStub(self.channel)
        try:
            replies = await stub.ServerReflectionInfo(
                [ServerReflectionRequest(file_containing_symbol=SERVICE_FULL_NAME)],
                timeout=self.timeout,
                metadata=self.metadata,
            )
        except GRPCError as exc:
            raise _blaze_error(exc) from None
        except _CONNECTION_ERRORS as exc:  # a server that wants a client certificate drops us here
            raise _unavailable(exc) from None
        reply = replies[0]
        if reply.HasField("error_response"):
            raise BlazeError(Status.NOT_FOUND, f"reflection: {reply.error_response.error_message}")
        pool = descriptor_pool.DescriptorPool()
        for data in reply.file_descriptor_response.file_descriptor_proto:
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(data))
        service = pool.FindServiceByName(SERVICE_FULL_NAME)
        return {
            m.name: _Method(
                f"/{SERVICE_FULL_NAME}/{m.name}", m.input_type, m.output_type, m.server_streaming, _reflected_decode
            )
            for m in service.methods
        }


class StreamCall:
    """An async iterator over a stream's chunks that cancels the call when closed."""

    def __init__(self, chunks: AsyncIterator[Any]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> StreamCall:
        return self

    async def __anext__(self) -> Any:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> StreamCall:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _cls(descriptor: Descriptor) -> Any:
    return message_factory.GetMessageClass(descriptor)


def _request(method: _Method, name: str, inputs: dict[str, Any]) -> Any:
    unknown = set(inputs) - set(method.request.fields_by_name)
    if unknown:
        known = ", ".join(method.request.fields_by_name) or "none"
        raise InvalidArgument(f"model {name!r} has no input {sorted(unknown)[0]!r} (inputs: {known})")
    return encode(method.request, inputs)


def _spec_decoder(model: Any) -> Callable[[Any], Any]:
    decode = request_decoder(output_fields(model))
    out = model.signature.output
    if isinstance(out, Struct):
        return lambda msg: out.cls(**decode(msg))
    return lambda msg: decode(msg)["result"]


def _reflected_decode(msg: Any) -> Any:
    values = to_python(msg)
    return values["result"] if list(values) == ["result"] else values


def _unavailable(exc: Exception) -> BlazeError:
    what = "TLS" if isinstance(exc, ssl.SSLError) else "connection lost"
    return BlazeError(Status.UNAVAILABLE, f"{what}: {exc}")


def _blaze_error(exc: GRPCError) -> BlazeError:
    return BlazeError(Status(exc.status.value), exc.message or exc.status.name)
