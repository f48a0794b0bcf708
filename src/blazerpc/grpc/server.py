"""The gRPC server: inference service, health (per service) and reflection (v1, v1alpha)."""

from __future__ import annotations

import socket
import weakref
from typing import Any

from grpclib.health.check import ServiceStatus
from grpclib.health.service import OVERALL, Health
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from ..lifecycle import Lifecycle
from ..protobuf.descriptors import Schema
from ..registry import Registry
from ..runtime import Runtime
from .service import InferenceService, Invoke


class _GrpclibServer(Server):
    """grpclib's server, remembering its connections so shutdown can close them."""

    def __init__(self, handlers: list[Any], **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        self.protocols: weakref.WeakSet[Any] = weakref.WeakSet()

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        self.protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        for protocol in list(self.protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                processor.close("server stopped")


class GrpcTransport:
    """A thin wrapper over ``grpclib.server.Server`` with our services mounted."""

    def __init__(
        self, registry: Registry, schema: Schema, runtime: Runtime, lifecycle: Lifecycle, invoke: Invoke
    ) -> None:
        service = InferenceService(registry, schema, runtime, lifecycle, invoke)
        status = ServiceStatus()
        lifecycle.on_change(status.set)
        health = Health({service: [status], OVERALL: [status]})
        self.server = _GrpclibServer(ServerReflection.extend([service, health], pool=schema.pool))
        self.port = 0

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        await self.server.start(host, port, reuse_port=reuse_port or None)
        sockets: list[socket.socket] = list(self._listener().sockets)
        self.port = sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        """Close the listening socket; calls on open connections keep running."""
        self._listener().close()

    async def close(self) -> None:
        """Cancel what is still running and wait for handlers to exit."""
        self.server.close()
        await self.server.wait_closed()
        self.server.close_connections()

    def _listener(self) -> Any:
        return self.server._server  # grpclib keeps its asyncio.Server here
