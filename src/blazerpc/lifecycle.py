"""Readiness, in-flight work and the middleware around every call, shared by the gRPC and HTTP transports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import BlazeError, Status
from .middleware import MiddlewareChain


class AppHealth:
    """What an app says of itself: whether it can serve now (e.g. not while its engine restarts),
    and whether it has failed for good, in which case the server exits non-zero."""

    def __init__(self) -> None:
        self.available = True
        self.reason = ""
        self.fatal: str | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def set_available(self, available: bool, reason: str = "") -> None:
        """Readiness follows: ``/ready`` answers 503 with ``reason`` and gRPC health NOT_SERVING while False."""
        self.available, self.reason = available, reason
        self._notify()

    def fail(self, reason: str) -> None:
        """Give up: the server stops (with the grace period) and exits non-zero."""
        self.available, self.reason, self.fatal = False, reason, reason
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()


class Lifecycle:
    """Starting -> ready -> draining, and the app's own health. Counts calls in flight so shutdown can
    wait, and holds the middleware every call passes (the one object both transports share)."""

    def __init__(self, health: AppHealth | None = None, middleware: MiddlewareChain | None = None) -> None:
        self.health = health or AppHealth()
        self.middleware = middleware or MiddlewareChain()
        self.ready = False
        self.draining = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[bool], None]] = []
        self.health.on_change(self._notify)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(serving)`` now and whenever readiness changes."""
        self._listeners.append(listener)
        listener(self.serving)

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining and self.health.available

    @property
    def unready_reason(self) -> str:
        if self.draining:
            return "server is shutting down"
        if not self.ready:
            return "server is starting"
        return self.health.reason or "server is not ready"

    def set_ready(self) -> None:
        self.ready = True
        self._notify()

    def start_draining(self) -> None:
        self.draining = True
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.serving)

    def track(self) -> _Tracked:
        """Count one call in flight; refuse it with UNAVAILABLE while draining."""
        return _Tracked(self)

    def _enter(self) -> None:
        if self.draining:
            raise BlazeError(Status.UNAVAILABLE, "server is shutting down")
        self.active += 1
        if self.active == 1:
            self._idle.clear()

    def _exit(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    def skip_grace(self) -> None:
        """End a ``wait_idle`` now, as if every call had finished."""
        self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True if every call in flight finished within ``timeout`` seconds."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


class _Tracked:
    __slots__ = ("lifecycle",)

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def __enter__(self) -> None:
        self.lifecycle._enter()

    def __exit__(self, *exc: object) -> None:
        self.lifecycle._exit()
