"""Adaptive batching: concurrent requests to one model become one call.

Two contracts, chosen from the model's type hints (which describe one request):

- tensor mode: every input and the output are tensors with a leading ``"batch"`` dim. The
  requests' arrays are concatenated along axis 0 (a request may carry several rows), the
  function is called once, and its output rows are split back by each request's row count.
- list mode: anything else. The function receives one list per parameter (one element per
  request) and returns a list of the same length; an ``Exception`` at a position fails only
  that request.

A parameter annotated ``Context`` gets one context per request, as a list, in both modes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import BlazeError, InvalidArgument, Status, short_error
from .registry import BatchConfig, ModelInfo
from .runtime import Runtime
from .schema import Tensor

log = logging.getLogger("blazerpc.batching")


def tensor_mode(model: ModelInfo) -> bool:
    sig = model.signature
    tensors = [f.type for f in sig.inputs] + [sig.output]
    return bool(sig.inputs) and all(isinstance(t, Tensor) and t.spec.batched for t in tensors)


@dataclass
class BatchStats:
    """Plain counters, read by whoever exports metrics."""

    batches: int = 0
    requests: int = 0
    rejected: int = 0
    dropped: int = 0  # cancelled or past their deadline while queued: never run
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    queue_wait_total: float = 0.0
    queue_wait_max: float = 0.0

    def record(self, waits: Sequence[float]) -> None:
        self.batches += 1
        self.requests += len(waits)
        self.sizes[len(waits)] += 1
        self.queue_wait_total += sum(waits)
        self.queue_wait_max = max(self.queue_wait_max, *waits)


class BatchObserver(Protocol):
    """Told of the queue's depth when it changes and of each batch's queue waits (``metrics.ModelBatchMetrics``)."""

    def queued(self, depth: int) -> None: ...

    def ran(self, waits: Sequence[float]) -> None: ...


@dataclass
class _Pending:
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    arrived: float
    rows: int = 1


class Batcher:
    """Queues one model's requests and runs them in batches, one batch at a time.

    A batch is dispatched when ``max_batch_size`` requests wait or ``batch_timeout_ms``
    after the first one arrived. While a batch runs the next one keeps collecting, so
    under load every call is a full batch and the model is never idle.
    """

    def __init__(
        self, model: ModelInfo, runtime: Runtime, config: BatchConfig, observer: BatchObserver | None = None
    ) -> None:
        self.model = model
        self.runtime = runtime
        self.config = config
        self.tensor_mode = tensor_mode(model)
        self.stats = BatchStats()
        self.observer = observer
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._collect(), name=f"batcher:{self.model.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BlazeError(Status.UNAVAILABLE, "server is shutting down"))

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        """Queue one request and wait for its share of a batch's result."""
        if len(self._queue) >= self.config.max_queue_size:
            self.stats.rejected += 1
            raise BlazeError(
                Status.RESOURCE_EXHAUSTED,
                f"queue of model {self.model.name!r} is full ({self.config.max_queue_size} requests waiting); "
                "retry later",
            )
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(kwargs, future, time.monotonic(), self._rows(kwargs))
        self._queue.append(pending)
        self._arrived.set()
        if self.observer is not None:
            self.observer.queued(len(self._queue))
        return await future  # cancelled here (disconnect, deadline): the batch skips it

    def _rows(self, kwargs: dict[str, Any]) -> int:
        if not self.tensor_mode:
            return 1
        context = self.model.signature.context
        rows = {name: int(value.shape[0]) for name, value in kwargs.items() if name != context}
        if len(set(rows.values())) > 1:
            raise InvalidArgument(f"inputs must have the same number of rows (dim 0), got {rows}")
        return next(iter(rows.values()))

    async def _collect(self) -> None:
        cfg = self.config
        running: asyncio.Task[None] | None = None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._queue[0].arrived + cfg.batch_timeout_ms / 1000
            while len(self._queue) < cfg.max_batch_size and (wait := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    break
            if running is not None:
                await asyncio.wait({running})  # pipelining: this batch kept filling meanwhile
            batch = self._take()
            if batch:
                running = asyncio.create_task(self._run(batch))

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            pending = self._queue.popleft()
            if pending.future.done():
                self.stats.dropped += 1
                continue
            batch.append(pending)
        if self.observer is not None:
            self.observer.queued(len(self._queue))
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        waits = [now - p.arrived for p in batch]
        self.stats.record(waits)
        if self.observer is not None:
            self.observer.ran(waits)
        names = [f.name for f in self.model.signature.inputs]
        try:
            kwargs: dict[str, Any]
            if self.tensor_mode:
                kwargs = {n: np.concatenate([p.kwargs[n] for p in batch]) for n in names}
            else:
                kwargs = {n: [p.kwargs[n] for p in batch] for n in names}
            if self.model.signature.context is not None:
                kwargs[self.model.signature.context] = [p.kwargs[self.model.signature.context] for p in batch]
            result = await self.runtime.call(self.model, kwargs)
            parts = self._split(result, batch)
        except BlazeError as exc:
            parts = [exc] * len(batch)
        except Exception as exc:
            log.exception("batch of %d for model %r failed", len(batch), self.model.name)
            parts = [BlazeError(Status.INTERNAL, f"model {self.model.name!r} failed: {short_error(exc)}")] * len(batch)
        for pending, part in zip(batch, parts, strict=True):
            if pending.future.done():
                continue  # its caller went away while the batch ran
            if isinstance(part, BaseException):
                pending.future.set_exception(part)
            else:
                pending.future.set_result(part)

    def _split(self, result: Any, batch: list[_Pending]) -> list[Any]:
        if self.tensor_mode:
            array = np.asarray(result)
            total = sum(p.rows for p in batch)
            if array.ndim == 0 or array.shape[0] != total:
                got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
                raise RuntimeError(f"batched call returned {got} for {total} input rows")
            offsets = np.cumsum([p.rows for p in batch])[:-1]
            return list(np.split(array, offsets))
        if not isinstance(result, (list, tuple)) or len(result) != len(batch):
            got = f"{len(result)} results" if isinstance(result, (list, tuple)) else type(result).__name__
            raise RuntimeError(
                f"batched call returned {got} for a batch of {len(batch)}; return one result per request"
            )
        return list(result)
