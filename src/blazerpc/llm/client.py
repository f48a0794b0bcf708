"""``EngineClient``: the asyncio face of the engine process, which it starts, watches and restarts.

Each incarnation of the engine is an ``EngineChannel`` (the event loop never touches its pipe).
When the engine process dies, every request in flight ends at once with
UNAVAILABLE, and the engine is started again after a backoff; more than ``max_restarts`` deaths
within ``window_s`` seconds give up (the server then exits, so an orchestrator replaces it).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BlazeError, Status
from .config import EngineConfig
from .engine_channel import EngineChannel
from .params import SamplingParams
from .protocol import (
    AbortRequest,
    AddRequest,
    EngineFailed,
    EngineReady,
    EngineStats,
    Event,
    RequestFailed,
    StatsRequest,
    TokenEvent,
)

log = logging.getLogger("blazerpc.llm")


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead engine after ``backoff_s`` (doubling up to ``max_backoff_s``), at most
    ``max_restarts`` times within ``window_s`` seconds; one death more and the client gives up."""

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 (0: never restart), got {self.max_restarts}")
        if self.window_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError("window_s must be > 0, and 0 <= backoff_s <= max_backoff_s")


class EngineState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # gave up restarting
    STOPPED = "stopped"


#: Called with the new state and a sentence saying why, on every change.
StateListener = Callable[[EngineState, str], None]


class EngineClient:
    """Streams token events of the engine process to asyncio callers; restarts the engine when it dies."""

    def __init__(
        self,
        model_path: str | Path,
        config: EngineConfig,
        restart: RestartPolicy | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.config = config
        self.restart = restart or RestartPolicy()
        self.on_state = on_state or (lambda state, why: None)
        self.state = EngineState.STOPPED
        self.info: EngineReady | None = None
        self._engine: EngineChannel | None = None
        self._ids = itertools.count()
        self._queues: dict[int, asyncio.Queue[TokenEvent | RequestFailed]] = {}
        self._stats: list[asyncio.Future[EngineStats]] = []
        self._deaths: deque[float] = deque()
        self._restarter: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._engine.pid if self._engine is not None else None

    @property
    def outstanding(self) -> int:
        """Requests in flight: running or queued in the engine."""
        return len(self._queues)

    async def start(self) -> EngineReady:
        """Start the engine process and wait until its model is loaded; raise ``RuntimeError`` if it cannot be."""
        self._set_state(EngineState.STARTING, "loading the model")
        try:
            return await self._spawn()
        except RuntimeError as exc:
            self._set_state(EngineState.FAILED, str(exc))
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        self._set_state(EngineState.STOPPED, "stopped")
        if self._restarter is not None:
            self._restarter.cancel()
        engine, self._engine = self._engine, None
        self._fail_all(Status.UNAVAILABLE, "the engine stopped")
        if engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, engine.close, timeout)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncGenerator[TokenEvent]:
        """Token events of one request; leaving early aborts it within one engine step."""
        engine = self._engine
        if engine is None or self.state is not EngineState.READY:
            raise self._unavailable()
        if self.outstanding >= self.config.capacity:
            raise BlazeError(
                Status.RESOURCE_EXHAUSTED,
                f"the engine is full ({self.config.capacity} requests running or queued); retry later",
                retry_after=1,
            )
        seq_id = next(self._ids)
        events: asyncio.Queue[TokenEvent | RequestFailed] = asyncio.Queue()
        self._queues[seq_id] = events
        engine.send(AddRequest(seq_id=seq_id, prompt_ids=prompt_ids, params=params))
        finished = False
        try:
            while not finished:
                event = await events.get()
                if isinstance(event, RequestFailed):
                    finished = True
                    raise BlazeError(event.status, event.message)
                finished = event.finish_reason is not None
                yield event
        finally:
            self._queues.pop(seq_id, None)
            if not finished and self._engine is engine:
                engine.send(AbortRequest(seq_id))

    async def stats(self) -> EngineStats:
        """Sequences and free KV blocks as the engine process sees them now."""
        if self._engine is None or self.state is not EngineState.READY:
            raise self._unavailable()
        future: asyncio.Future[EngineStats] = asyncio.get_running_loop().create_future()
        self._stats.append(future)
        self._engine.send(StatsRequest())
        return await future

    def _unavailable(self) -> BlazeError:
        why = {
            EngineState.STARTING: "the model is still loading",
            EngineState.RESTARTING: "the engine is restarting after a failure; retry shortly",
            EngineState.FAILED: "the engine failed and is not coming back",
        }.get(self.state, "the engine is not running")
        return BlazeError(Status.UNAVAILABLE, why, retry_after=2 if self.state is EngineState.RESTARTING else None)

    async def _spawn(self) -> EngineReady:
        engine = EngineChannel(self.model_path, self.config, self._on_message)
        self._engine = engine
        try:
            info = await engine.ready
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(None, engine.close, 1.0)
            self._engine = None
            raise
        self.info = info
        self._set_state(
            EngineState.READY, f"model {info.model_name} loaded (engine pid {engine.pid}): {info.runtime.describe()}"
        )
        return info

    def _on_message(self, engine: EngineChannel, message: Any) -> None:
        if isinstance(message, list):
            self._dispatch(message)
        elif isinstance(message, EngineReady):
            if not engine.ready.done():
                engine.ready.set_result(message)
        elif isinstance(message, EngineFailed):
            if not engine.ready.done():
                engine.ready.set_exception(
                    RuntimeError(f"the engine process could not load the model: {message.message}")
                )
        elif message is None:
            self._on_exit(engine)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, EngineStats):
                for future in self._stats:
                    if not future.done():
                        future.set_result(event)
                self._stats.clear()
                continue
            events_of = self._queues.get(event.seq_id)
            if events_of is not None:  # else: its caller left meanwhile
                events_of.put_nowait(event)

    def _on_exit(self, engine: EngineChannel) -> None:
        if not engine.ready.done():  # died while loading: _spawn's caller decides
            engine.ready.set_exception(
                RuntimeError(f"the engine process died while loading ({engine.exit_description})")
            )
            return
        if engine.ready.cancelled() or engine.ready.exception() is not None:
            return  # it said it could not load, then exited: _spawn's caller decides, no restart
        if engine is not self._engine or self.state is EngineState.STOPPED:
            return
        self._engine = None
        log.error("the engine process (pid %s) died: %s", engine.pid, engine.exit_description)
        self._fail_all(Status.UNAVAILABLE, f"the engine process died ({engine.exit_description}); retry shortly")
        self._after_death(engine.exit_description)

    def _fail_all(self, status: Status, message: str) -> None:
        for seq_id, events in self._queues.items():
            events.put_nowait(RequestFailed(seq_id, status, message))
        self._queues.clear()
        for future in self._stats:
            if not future.done():
                future.set_exception(BlazeError(status, message))
        self._stats.clear()

    def _after_death(self, why: str) -> None:
        """Count the death; restart after a backoff, or give up if the window holds too many."""
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self.restart.window_s:
            self._deaths.popleft()
        if len(self._deaths) > self.restart.max_restarts:
            message = f"the engine died {len(self._deaths)} times within {self.restart.window_s:g} s (last: {why})"
            log.error("%s; giving up", message)
            self._set_state(EngineState.FAILED, message)
            return
        delay = min(self.restart.backoff_s * 2 ** (len(self._deaths) - 1), self.restart.max_backoff_s)
        self._set_state(EngineState.RESTARTING, f"the engine died ({why}); restarting in {delay:.1f} s")
        self._restarter = asyncio.get_running_loop().create_task(self._restart_after(delay))

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._spawn()
        except RuntimeError as exc:
            log.error("engine restart failed: %s", exc)
            self._after_death(str(exc))

    def _set_state(self, state: EngineState, why: str) -> None:
        if state is self.state:
            return
        self.state = state
        if state is EngineState.READY:
            log.info("engine ready: %s", why)
        self.on_state(state, why)
