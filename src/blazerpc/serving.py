"""Running an app: transports, startup and shutdown hooks, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from .app import BlazeApp, Hook
from .auth import check_api_keys
from .batching import Batcher
from .connections import ConnectionBudget, default_max_connections
from .lifecycle import Lifecycle
from .logs import configure_logging
from .middleware import server_middleware
from .registry import ModelInfo
from .runtime import Runtime
from .tls import GRPC_ALPN, server_context

log = logging.getLogger("blazerpc")


@dataclass(frozen=True)
class ServeConfig:
    """Where and how to serve. A port of ``None`` turns that transport off; 0 picks a free one."""

    host: str = "0.0.0.0"
    grpc_port: int | None = 50051
    http_port: int | None = 8000
    grace_period: float = 10.0
    reuse_port: bool = False
    max_threads: int = 64
    max_body_mb: float = 32.0  # HTTP bodies and gRPC messages above this are refused before they are read
    max_connections: int = 0  # both transports together; 0: what the open-file limit allows
    idle_timeout_s: float = 15.0  # an HTTP connection with no request in flight (a head arriving counts as none)
    grpc_idle_timeout_s: float = 300.0  # a gRPC connection with no stream open
    body_timeout_s: float = 30.0  # the longest wait for the next piece of a request body or message
    max_head_kb: int = 64  # an HTTP request line and headers
    access_log: bool = True  # one INFO line per call on the ``blazerpc.access`` logger
    api_keys: tuple[str, ...] | None = None  # calls need one as a bearer token; None: from BLAZE_API_KEYS, () none
    protect_docs: bool = False  # with API keys: /docs, /openapi.json and /metrics need one too
    metrics: bool = True  # Prometheus metrics at GET /metrics (see blazerpc.metrics)
    metrics_port: int | None = None  # also serve /metrics on its own port (for servers without HTTP)
    ssl_certfile: str | None = None  # TLS on both transports: the server's certificate chain (PEM)
    ssl_keyfile: str | None = None  # its private key (PEM); default: in ssl_certfile
    ssl_ca_certs: str | None = None  # require client certificates signed by these CAs (mutual TLS)
    sse_ping_interval_s: float = 15.0  # an event stream silent this long gets a ": ping" comment; 0: never

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535, got {port}")
        if self.grpc_port is None and self.http_port is None:
            raise ValueError("both transports are off; give a gRPC port or an HTTP port")
        if self.grace_period < 0:
            raise ValueError(f"grace_period must be >= 0 seconds, got {self.grace_period}")
        if not self.max_body_mb > 0:
            raise ValueError(f"max_body_mb must be > 0, got {self.max_body_mb}")
        for name in ("idle_timeout_s", "grpc_idle_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_connections < 0:
            raise ValueError(f"max_connections must be >= 0 (0: from the open-file limit), got {self.max_connections}")
        if self.max_head_kb < 1:
            raise ValueError(f"max_head_kb must be >= 1, got {self.max_head_kb}")
        if self.max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {self.max_threads}")
        if self.metrics_port is not None:
            if not 0 <= self.metrics_port <= 65535:
                raise ValueError(f"metrics_port must be between 0 and 65535, got {self.metrics_port}")
            if not self.metrics:
                raise ValueError("metrics_port needs metrics on")
        if self.sse_ping_interval_s < 0:
            raise ValueError(f"sse_ping_interval_s must be >= 0 seconds (0: never), got {self.sse_ping_interval_s}")
        if (self.ssl_keyfile or self.ssl_ca_certs) and not self.ssl_certfile:
            raise ValueError("ssl_keyfile and ssl_ca_certs need ssl_certfile (the server's certificate)")
        for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: no such file: {path}")
        if self.ssl_certfile is not None:
            server_context(self, GRPC_ALPN)  # a file that holds no certificate or key fails now, not at start
        if self.api_keys is not None:
            if isinstance(self.api_keys, str):
                raise ValueError("api_keys is a tuple of keys, e.g. api_keys=('key',), not one string")
            check_api_keys(self.api_keys)


class BlazeServer:
    """One process serving an app over gRPC and/or HTTP on one event loop.

    ``await start()`` binds the ports (health says NOT_SERVING), runs the startup hooks,
    then reports SERVING. ``await stop()`` drains: readiness goes off, listeners close,
    calls in flight get ``grace_period`` seconds, the rest are cancelled.
    """

    def __init__(self, app: BlazeApp, config: ServeConfig | None = None) -> None:
        self.app = app
        self.config = config or ServeConfig()
        self.middleware = server_middleware(app, self.config)
        self.lifecycle = Lifecycle(app.health, self.middleware)
        self.runtime = Runtime(self.config.max_threads)
        self.grpc: Any = None
        self.http: Any = None
        self.batchers: dict[str, Batcher] = {}
        self.metrics_server: Any = None
        self.connections = ConnectionBudget(self.config.max_connections or default_max_connections())
        self._stopped = False

    @property
    def grpc_port(self) -> int:
        return int(self.grpc.port) if self.grpc else 0

    @property
    def http_port(self) -> int:
        return int(self.http.port) if self.http else 0

    async def invoke(self, model: ModelInfo, kwargs: dict[str, Any]) -> Any:
        batcher = self.batchers.get(model.name)
        if batcher is not None:
            return await batcher.submit(kwargs)
        return await self.runtime.call(model, kwargs)

    async def start(self, listen: bool = True) -> None:
        """Bind the ports, run the startup hooks, report SERVING. ``listen=False`` builds the same
        server but binds nothing: a host with its own listeners (a Ray Serve replica) calls the
        HTTP app, ``http.gate``, itself; gRPC and the metrics port are then off."""
        cfg = self.config
        for model in self.app.registry:
            if model.batch is not None:
                observer = self.app.metrics.batches.of(model.name) if cfg.metrics else None
                self.batchers[model.name] = Batcher(model, self.runtime, model.batch, observer)
                self.batchers[model.name].start()
        if cfg.grpc_port is not None and listen:
            from .grpc.server import GrpcTransport
            from .protobuf.descriptors import Schema

            self.grpc = GrpcTransport(
                self.app.registry,
                Schema.of(self.app.registry),
                self.runtime,
                self.lifecycle,
                self.invoke,
                cfg,
                self.connections,
            )
            await self.grpc.start(cfg.host, cfg.grpc_port, cfg.reuse_port)
        if cfg.http_port is not None:
            from .http.server import HttpTransport

            self.http = HttpTransport(self.app, self.runtime, self.lifecycle, self.invoke, cfg, self.connections)
            if cfg.metrics:
                self._serve_metrics_page(self.http.api)
            if listen:
                await self.http.start(cfg.host, cfg.http_port, cfg.reuse_port)
        if cfg.metrics_port is not None and listen:
            from .http.metrics_page import MetricsServer

            self.metrics_server = MetricsServer(self.app.metrics, self.lifecycle, cfg)
            await self.metrics_server.start(cfg.host, cfg.metrics_port, cfg.reuse_port)
        await _run_hooks(self.app.startup_hooks, self.runtime)
        self.lifecycle.set_ready()
        if listen:
            self._banner()

    def _serve_metrics_page(self, api: Any) -> None:
        from .http.metrics_page import PATH, metrics_page, route_paths

        api.add_route(PATH, metrics_page(self.app.metrics), methods=["GET"], include_in_schema=False)
        self.app.metrics.calls.know_routes(route_paths(api), (m.name for m in self.app.registry))

    async def stop(self, grace_period: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_period if grace_period is None else grace_period
        self.lifecycle.start_draining()
        if self.grpc:
            self.grpc.stop_accepting()
        if self.http:
            self.http.stop_accepting()
        if not await self.lifecycle.wait_idle(grace):
            log.warning("%d call(s) still running after %.1fs grace period; cancelling", self.lifecycle.active, grace)
        if self.grpc:
            await self.grpc.close()
        if self.http:
            await self.http.close()
        if self.metrics_server:
            await self.metrics_server.close()
        self.connections.close()
        for batcher in self.batchers.values():
            await batcher.stop()
        await _run_hooks(self.app.shutdown_hooks, self.runtime)
        self.runtime.shutdown()
        log.info("stopped")

    async def serve_forever(self) -> int:
        """Serve until SIGINT or SIGTERM (exit code 0) or until the app fails for good (1, see
        ``AppHealth.fail``); a second signal skips the grace period."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_health() -> None:
            if self.app.health.fatal is not None and not stop.is_set():
                log.error("shutting down: %s", self.app.health.fatal)
                stop.set()

        self.app.health.on_change(on_health)

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            log.info("received %s, shutting down%s", signal.Signals(signum).name, " now" if signals > 1 else "")
            stop.set()
            if signals > 1:
                self.lifecycle.skip_grace()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()
        return 1 if self.app.health.fatal is not None else 0

    def _banner(self) -> None:
        addresses = []
        mutual = " (mutual TLS)" if self.config.ssl_ca_certs else ""
        tls, scheme = (mutual or " (TLS)", "https") if self.config.tls else ("", "http")
        if self.grpc:
            addresses.append(f"gRPC{tls} on {self.config.host}:{self.grpc_port}")
        if self.http:
            addresses.append(f"HTTP on {scheme}://{self.config.host}:{self.http_port}{mutual}")
        if self.metrics_server:
            addresses.append(f"metrics on {self.config.host}:{self.metrics_server.port}/metrics")
        from . import __version__

        log.info("blazerpc %s serving %s", __version__, ", ".join(addresses))
        for m in self.app.registry:
            kind = "streaming" if m.streaming else ("batched" if m.batch else "unary")
            log.info("  model %s (version %s, %s)", m.name, m.version, kind)
        if self.middleware.middleware:
            log.info("  middleware: %s", ", ".join(_describe(m) for m in self.middleware.middleware))


def _describe(middleware: object) -> str:
    from .auth import ApiKeyAuth
    from .metrics import CallMetrics

    if isinstance(middleware, CallMetrics):
        return "metrics (/metrics)"
    if isinstance(middleware, ApiKeyAuth):
        docs = "docs open" if middleware.open_paths else "docs protected"
        return f"API keys ({len(middleware.keys)}, {docs})"
    return type(middleware).__name__


async def _run_hooks(hooks: list[Hook], runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    for hook in hooks:
        if inspect.iscoroutinefunction(hook):
            await hook()
        else:
            await loop.run_in_executor(runtime.executor, hook)


def run(app: BlazeApp, config: ServeConfig) -> None:
    """Serve ``app`` in this process until a signal stops it; exits non-zero if the app failed for good."""
    if not logging.getLogger().handlers:
        configure_logging("info")
    code = asyncio.run(BlazeServer(app, config).serve_forever())
    if code:
        raise SystemExit(code)
