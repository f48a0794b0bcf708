"""The gRPC server: inference service, health (per service) and reflection (v1, v1alpha)."""

from __future__ import annotations

import weakref
from asyncio import BaseTransport
from typing import TYPE_CHECKING, Any

from grpclib.health.check import ServiceStatus
from grpclib.health.service import OVERALL, Health
from grpclib.protocol import H2Protocol
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from ..connections import LISTEN_BACKLOG, ConnectionBudget, listening_socket
from ..lifecycle import Lifecycle
from ..protobuf.descriptors import Schema
from ..registry import Registry
from ..runtime import Runtime
from ..tls import GRPC_ALPN, server_context
from .service import InferenceService, Invoke, MessageLimits

if TYPE_CHECKING:
    from ..serving import ServeConfig


class _GuardedH2Protocol(H2Protocol):
    """One gRPC connection, counted in the connection budget (see ``blazerpc.connections``)."""

    def __init__(self, *args: Any, budget: ConnectionBudget, idle_timeout_s: float) -> None:
        super().__init__(*args)
        self.budget = budget
        self.idle_timeout_s = idle_timeout_s

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        if not self.budget.admit(self, transport):
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.budget.release(self)
        super().connection_lost(exc)

    def busy(self) -> bool:
        return bool(self.processor.streams)

    def close(self) -> None:
        self.connection.close()


class _GrpclibServer(Server):
    """grpclib's server, its connections in the budget and remembered so shutdown can close them."""

    def __init__(self, handlers: list[Any], budget: ConnectionBudget, idle_timeout_s: float) -> None:
        super().__init__(handlers)
        self.budget = budget
        self.idle_timeout_s = idle_timeout_s
        self.protocols: weakref.WeakSet[Any] = weakref.WeakSet()

    def _protocol_factory(self) -> Any:
        plain = super()._protocol_factory()
        protocol = _GuardedH2Protocol(
            plain.handler, plain.config, plain.h2_config, budget=self.budget, idle_timeout_s=self.idle_timeout_s
        )
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
        self,
        registry: Registry,
        schema: Schema,
        runtime: Runtime,
        lifecycle: Lifecycle,
        invoke: Invoke,
        config: ServeConfig,
        connections: ConnectionBudget,
    ) -> None:
        service = InferenceService(
            registry, schema, runtime, lifecycle, invoke, MessageLimits(config.max_body_bytes, config.body_timeout_s)
        )
        status = ServiceStatus()
        lifecycle.on_change(status.set)
        health = Health({service: [status], OVERALL: [status]})
        handlers = ServerReflection.extend([service, health], pool=schema.pool)
        self.server = _GrpclibServer(handlers, connections, config.grpc_idle_timeout_s)
        self.connections = connections
        self.config = config
        self.port = 0

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        tls = server_context(self.config, GRPC_ALPN) if self.config.tls else None
        handshake_timeout_s = self.config.idle_timeout_s if tls else None
        sock = listening_socket(host, port, self.connections, reuse_port, handshake_timeout_s)
        self.port = sock.getsockname()[1]
        await self.server.start(sock=sock, backlog=LISTEN_BACKLOG, ssl=tls)

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
