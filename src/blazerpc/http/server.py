"""Serving the FastAPI app with uvicorn inside our own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from ..app import BlazeApp
from ..connections import LISTEN_BACKLOG, ConnectionBudget, listening_socket
from ..lifecycle import Lifecycle
from ..runtime import Runtime
from ..tls import HTTP_ALPN, server_context
from .errors import ErrorResponder
from .gate import RequestGate
from .protocol import GuardedHttpProtocol
from .routes import Invoke, build_api

if TYPE_CHECKING:
    from ..serving import ServeConfig


class _UvicornServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # BlazeServer owns the signal handlers


class HttpTransport:
    def __init__(
        self,
        app: BlazeApp,
        runtime: Runtime,
        lifecycle: Lifecycle,
        invoke: Invoke,
        config: ServeConfig,
        connections: ConnectionBudget,
    ) -> None:
        errors = ErrorResponder(app.http_error_bodies)
        self.api = build_api(app, runtime, lifecycle, invoke, errors)
        self.gate = RequestGate(
            self.api, lifecycle, errors, config.max_body_bytes, config.body_timeout_s, config.sse_ping_interval_s
        )
        self.config = config
        self.connections = connections
        self.protocol = functools.partial(
            GuardedHttpProtocol,
            budget=connections,
            idle_timeout_s=config.idle_timeout_s,
            max_head_bytes=config.max_head_kb * 1024,
        )
        self.port = 0
        self.server: _UvicornServer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        tls = server_context(self.config, HTTP_ALPN) if self.config.tls else None
        handshake_timeout_s = self.config.idle_timeout_s if tls else None
        sock = listening_socket(host, port, self.connections, reuse_port, handshake_timeout_s)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.gate,
            http=self.protocol,  # type: ignore[arg-type]
            backlog=LISTEN_BACKLOG,  # uvicorn listens again with this
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=math.ceil(self.config.idle_timeout_s),
            timeout_graceful_shutdown=math.ceil(self.config.grace_period) + 1,  # BlazeServer.stop decides
            ssl_context_factory=(lambda *_: tls) if tls else None,
        )
        self.server = _UvicornServer(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    def stop_accepting(self) -> None:
        """Start uvicorn's shutdown: close the listener, let open responses finish."""
        if self.server is not None:
            self.server.should_exit = True

    async def close(self) -> None:
        """Cancel responses still running (the grace period is over) and wait for uvicorn."""
        if self.server is not None and self.task is not None:
            tasks = list(self.server.server_state.tasks)
            for task in tasks:
                task.cancel()  # the gate answers each client: a 503, or a last event in a stream
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            self.server.should_exit = True
            self.server.force_exit = True
            await self.task
