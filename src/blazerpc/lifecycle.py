"""Readiness and in-flight work, shared by the gRPC and HTTP transports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import BlazeError, Status


class Lifecycle:
    """Starting -> ready -> draining. Counts calls in flight so shutdown can wait for them."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[bool], None]] = []

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(serving)`` now and whenever readiness changes."""
        self._listeners.append(listener)
        listener(self.serving)

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining

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
