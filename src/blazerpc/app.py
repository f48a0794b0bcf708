"""``BlazeApp``: the decorator that turns functions into served models."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import BlazeError
from .lifecycle import AppHealth
from .metrics import Metrics
from .middleware import MiddlewareChain
from .registry import BatchConfig, ModelInfo, Registry
from .schema import read_signature

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M")
Hook = Callable[[], Awaitable[None] | None]
#: An error as a JSON body; see ``BlazeApp.include_router``.
ErrorBody = Callable[[BlazeError], dict[str, Any]]


class BlazeApp:
    """A set of models plus the hooks that run when serving starts and stops.

    >>> app = BlazeApp()
    >>> @app.model("echo")
    ... def echo(text: str) -> str:
    ...     return text
    """

    def __init__(
        self,
        name: str = "blazerpc",
        *,
        enable_batching: bool = False,
        max_batch_size: int = 32,
        batch_timeout_ms: float = 5.0,
        max_queue_size: int = 1024,
    ) -> None:
        self.name = name
        self.registry = Registry()
        self.batch_defaults = BatchConfig(max_batch_size, batch_timeout_ms, max_queue_size)
        self.enable_batching = enable_batching
        self.startup_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        self.http_routers: list[Any] = []  # FastAPI APIRouters served beside the models' routes
        self.http_error_bodies: dict[str, ErrorBody] = {}  # path prefix -> its routers' error body
        #: The app's own say on readiness (e.g. an engine that restarts); see ``AppHealth``.
        self.health = AppHealth()
        self.middleware: list[object] = []  # see ``add_middleware``
        #: Prometheus metrics served at ``GET /metrics``; register your own in ``metrics.registry``.
        self.metrics = Metrics()

    def model(
        self,
        name: str,
        *,
        version: str = "1",
        streaming: bool = False,
        batching: bool | None = None,
        max_batch_size: int | None = None,
        batch_timeout_ms: float | None = None,
        max_queue_size: int | None = None,
        collect: Callable[[list[Any]], Any] | None = None,
    ) -> Callable[[F], F]:
        """Register a function as the model ``name``.

        Parameters and the return type come from type hints. With ``streaming=True`` the
        function is a generator (sync or async) and each yielded value is one message.
        ``batching`` (default: the app's ``enable_batching``) gathers concurrent requests
        into one call; see docs/batching.md for the contract. ``collect`` (streaming models
        only) turns the chunks into the answer of a non-streaming HTTP call; its return hint
        is that answer's schema.
        """

        def register(fn: F) -> F:
            where = f"model {name!r} (function {getattr(fn, '__qualname__', fn)!r})"
            is_gen = inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)
            if streaming and not is_gen:
                raise TypeError(f"{where}: streaming=True needs a generator function (one that yields)")
            if not streaming and is_gen:
                raise TypeError(f"{where}: a generator function needs streaming=True")
            batch = None
            if (self.enable_batching if batching is None else batching) and not streaming:
                defaults = self.batch_defaults
                batch = BatchConfig(
                    defaults.max_batch_size if max_batch_size is None else max_batch_size,
                    defaults.batch_timeout_ms if batch_timeout_ms is None else batch_timeout_ms,
                    defaults.max_queue_size if max_queue_size is None else max_queue_size,
                )
            collect_output = None
            if collect is not None:
                if not streaming:
                    raise TypeError(f"{where}: collect= only applies to streaming models")
                collect_output = read_signature(collect, f"{where}, collect function", streaming=False).output
            info = ModelInfo(
                name=name,
                fn=fn,
                signature=read_signature(fn, where, streaming),
                version=version,
                streaming=streaming,
                batch=batch,
                description=inspect.getdoc(fn) or "",
                collect=collect,
                collect_output=collect_output,
            )
            self.registry.add(info)
            return fn

        return register

    def on_startup(self, fn: Hook) -> Hook:
        """Run ``fn`` (sync or async) before the server reports SERVING, e.g. to load weights."""
        self.startup_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: Hook) -> Hook:
        """Run ``fn`` after the last request has finished or been cancelled."""
        self.shutdown_hooks.append(fn)
        return fn

    def add_middleware(self, middleware: M) -> M:
        """Run ``middleware.before(ctx)`` before every call and ``middleware.after(ctx)`` after it,
        on both transports, in the order added (``after`` in reverse); see ``blazerpc.Middleware``."""
        MiddlewareChain([middleware])  # refuses an object with neither method, now rather than at serve time
        self.middleware.append(middleware)
        return middleware

    def include_router(self, router: Any, error_body: ErrorBody | None = None) -> None:
        """Serve a FastAPI ``APIRouter``'s routes over HTTP beside the models' own.

        ``error_body(error)`` shapes every error answered under the router's prefix
        (validation, 413, 503 while draining, a ``BlazeError``), e.g. as OpenAI's error object.
        """
        self.http_routers.append(router)
        if error_body is not None:
            if not router.prefix:
                raise ValueError("a router with its own error body needs a path prefix")
            self.http_error_bodies[router.prefix] = error_body

    def serve(
        self, host: str = "0.0.0.0", port: int | None = 50051, http_port: int | None = 8000, **options: Any
    ) -> None:
        """Serve gRPC on ``port`` and HTTP on ``http_port`` until SIGINT or SIGTERM.

        ``None`` turns a transport off; other options are those of ``ServeConfig``.
        """
        from .serving import ServeConfig, run

        run(self, ServeConfig(host=host, grpc_port=port, http_port=http_port, **options))
