"""One Ray Serve replica: the app served by a ``BlazeServer`` whose listeners are Ray's proxies.

The replica builds the app (``app_factory()``: it imports the app's module, or builds
``blaze llm``'s), then runs ``BlazeServer.start()``: batchers, startup hooks, readiness and the
middleware are the server's own. The server binds no port (``start(listen=False)``): the
replica hands the ASGI app that server built (our gate in front of ``build_api``'s FastAPI
app) to Ray's ingress: routes, JSON and SSE, errors, ``/docs``, ``/health``, ``/ready``,
``/metrics`` (and every route added later) are identical to ``blaze serve``'s. gRPC methods
are added per model by ``replica_class`` (``grpc_calls.py``).

Ray asks ``check_health`` every ``health_check_period_s``: it fails while the server is not
ready (the app said it cannot serve, or failed for good), and Ray replaces a replica after 3
failures in a row. Ray calls ``__del__`` after draining the replica: the server stops with
its grace period and runs the shutdown hooks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from ..app import BlazeApp
from ..logs import configure_logging
from ..protobuf.descriptors import method_name
from ..registry import ModelInfo, Registry
from ..serving import BlazeServer, ServeConfig
from .grpc_calls import GrpcCalls
from .grpc_health import health_reply
from .http_ingress import OneRequestId

log = logging.getLogger("blazerpc")

AppFactory = Callable[[], BlazeApp]


class BlazeReplica:
    """The body of the deployment; ``replica_class`` adds a method per model."""

    async def __init__(  # type: ignore[misc]  # Ray's ingress awaits an async constructor
        self, app_factory: AppFactory, config: ServeConfig, stubs: str, log_level: str = "info"
    ) -> None:
        configure_logging(log_level)
        # Ray hands us requests as the stubs' message classes: load them before our own schema,
        # which then keeps to a private descriptor pool (both define the blazerpc.* messages).
        importlib.import_module(stubs)
        self.blaze_app = app_factory()
        self.server = BlazeServer(self.blaze_app, replace(config, grpc_port=None, http_port=0, metrics_port=None))
        await self.server.start(listen=False)
        self.grpc = GrpcCalls(self.server)

    def __serve_build_asgi_app__(self) -> Any:
        return OneRequestId(self.server.http.gate)

    async def check_health(self) -> None:
        lifecycle = self.server.lifecycle
        if not lifecycle.serving:
            raise RuntimeError(f"not ready: {lifecycle.unready_reason}")

    async def Check(self, request: Any) -> Any:  # grpc.health.v1.Health/Check, named as Ray routes it
        return health_reply(self.server.lifecycle.serving)

    async def __del__(self) -> None:
        if hasattr(self, "server"):  # the constructor got that far
            await self.server.stop()


def replica_class(registry: Registry) -> type[BlazeReplica]:
    """``BlazeReplica`` with ``Predict<Model>`` for every model of ``registry``: Ray's gRPC proxy
    calls the replica method named after the RPC."""
    methods = {method_name(m): (_streaming if m.streaming else _unary)(m.name) for m in registry}
    return type("BlazeReplica", (BlazeReplica,), methods)


def _unary(name: str) -> Callable[..., Any]:
    async def predict(self: BlazeReplica, request: Any, grpc_context: Any) -> Any:
        model: ModelInfo = self.blaze_app.registry[name]
        return await self.grpc.unary(model, request, grpc_context)

    return predict


def _streaming(name: str) -> Callable[..., Any]:
    async def predict(self: BlazeReplica, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
        model: ModelInfo = self.blaze_app.registry[name]
        async for reply in self.grpc.stream(model, request, grpc_context):
            yield reply

    return predict
