"""Middleware: code that sees every call on both transports, before it runs and after it ends.

``app.add_middleware(obj)`` adds an object with a ``before(ctx)`` method, an ``after(ctx)``
method, or both (subclass ``Middleware`` and override what you need). The server runs them in
this order: the built-in metrics, access log, API-key auth, then the app's middleware in the order added;
``after`` runs in the reverse order. See docs/production.md.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .context import Context
from .errors import BlazeError, status_of

if TYPE_CHECKING:
    from .app import BlazeApp
    from .serving import ServeConfig

log = logging.getLogger("blazerpc")


class Middleware:
    """Override ``before``, ``after`` or both; the server calls only what a class overrides.

    ``before(ctx)`` (sync or async) runs once the call's head has arrived, before its request is
    read: raise ``BlazeError`` to refuse the call with that status (e.g. UNAUTHENTICATED, or
    RESOURCE_EXHAUSTED with ``retry_after`` for a rate limit). ``after(ctx)`` (sync: it must not
    block) runs once the call has ended, refused ones included: ``ctx.status``, ``ctx.http_status``,
    ``ctx.duration_s`` and ``ctx.messages`` say how. An exception in ``after`` is logged, never
    sent to the client.
    """

    def before(self, ctx: Context) -> Awaitable[None] | None:
        return None

    def after(self, ctx: Context) -> None:
        return None


def _overrides(middleware: object, name: str) -> Callable[..., Any] | None:
    method: Callable[..., Any] | None = getattr(middleware, name, None)
    if not callable(method):
        return None
    if isinstance(middleware, Middleware) and getattr(type(middleware), name) is getattr(Middleware, name):
        return None  # the base class's no-op: not worth a call per request
    return method


class MiddlewareChain:
    """The middleware of one server, with the no-op hooks left out so a call pays only for real ones."""

    def __init__(self, middleware: Iterable[object] = ()) -> None:
        self.middleware: tuple[object, ...] = tuple(middleware)
        self._before: list[tuple[Callable[[Context], Any], bool]] = []
        self._after: list[Callable[[Context], None]] = []
        for m in self.middleware:
            before, after = _overrides(m, "before"), _overrides(m, "after")
            if before is None and after is None:
                raise TypeError(f"middleware {m!r} has neither a before(ctx) nor an after(ctx) method")
            if before is not None:
                self._before.append((before, inspect.iscoroutinefunction(before)))
            if after is not None and inspect.iscoroutinefunction(after):
                raise TypeError(f"{type(m).__name__}.after must be a plain function: it runs as the call ends")
            if after is not None:
                self._after.append(after)
        self._after.reverse()
        self.has_before = bool(self._before)

    async def before(self, ctx: Context) -> None:
        """Run every ``before``; a ``BlazeError`` refuses the call, any other exception is INTERNAL."""
        for hook, is_async in self._before:
            try:
                if is_async:
                    await hook(ctx)
                else:
                    hook(ctx)
            except BlazeError:
                raise
            except Exception as exc:
                raise status_of(exc, f"middleware {_name(hook)}") from None

    def after(self, ctx: Context) -> None:
        for hook in self._after:
            try:
                hook(ctx)
            except Exception:
                log.exception("middleware %s failed after %s", _name(hook), ctx.method)


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__qualname__", repr(hook))


def server_middleware(app: BlazeApp, config: ServeConfig) -> MiddlewareChain:
    """The built-in middleware the config turns on, then the app's own."""
    from .auth import ApiKeyAuth, api_keys_from_env
    from .logs import AccessLog

    builtin: list[object] = []
    if config.metrics:
        builtin.append(app.metrics.calls)
    if config.access_log:
        builtin.append(AccessLog())
    keys: Sequence[str] = api_keys_from_env() if config.api_keys is None else config.api_keys
    if keys:
        builtin.append(ApiKeyAuth(keys, protect_docs=config.protect_docs))
    return MiddlewareChain([*builtin, *app.middleware])
