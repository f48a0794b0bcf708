"""``GET /metrics``: on the HTTP port, and on ``--metrics-port`` for a server without HTTP.

Both pass the request gate, so the middleware sees scrapes as calls: they are counted, logged,
and need an API key when the docs are protected.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..lifecycle import Lifecycle
from ..metrics import Metrics
from ..tls import HTTP_ALPN, server_context
from .errors import ErrorResponder
from .gate import RequestGate

if TYPE_CHECKING:
    from ..serving import ServeConfig

PATH = "/metrics"


def metrics_page(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint: Prometheus text format, or OpenMetrics when the scraper asks for it."""

    async def scrape(request: Request) -> Response:
        body, content_type = await metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return scrape


def route_paths(api: FastAPI) -> set[str]:
    """Every path the app answers: the labels of calls to routes that serve no model."""
    docs = {api.openapi_url, api.docs_url, api.redoc_url, api.swagger_ui_oauth2_redirect_url, PATH}
    return set(api.openapi()["paths"]) | {path for path in docs if path}


class MetricsServer:
    """``/metrics`` alone on its own port (TLS and API keys as the main server has them)."""

    def __init__(self, metrics: Metrics, lifecycle: Lifecycle, config: ServeConfig) -> None:
        app = Starlette(routes=[Route(PATH, metrics_page(metrics), methods=["GET"])])
        self.gate = RequestGate(app, lifecycle, ErrorResponder({}), 0, config.body_timeout_s)
        self.config = config
        self.port = 0
        self.server: _UvicornServer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=reuse_port)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        tls = server_context(self.config, HTTP_ALPN) if self.config.tls else None
        config = uvicorn.Config(
            self.gate,
            lifespan="off",
            log_level="warning",
            access_log=False,
            ssl_context_factory=(lambda *_: tls) if tls else None,
        )
        self.server = _UvicornServer(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            self.server.force_exit = True
            await self.task


class _UvicornServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # BlazeServer owns the signal handlers
