"""Prometheus metrics: every call, every batch, and whatever an app adds, at ``GET /metrics``.

``Metrics`` is one app's set: a ``prometheus_client`` registry with the process collectors,
the call metrics (a middleware: it sees every call on both transports) and the batch metrics
(the batchers report to it), plus async ``on_scrape`` refreshers for values that are read
rather than counted (the LLM engine's queue and KV cache). Names and labels are listed in
docs/production.md.

With ``blaze serve --workers N`` every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by the supervisor)
and any worker's scrape reports the sum over all of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .context import Context
from .middleware import Middleware

log = logging.getLogger("blazerpc")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds, from a fast unary call (~0.3 ms) to a long stream.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: The label of HTTP calls that matched no route (so a scan of random paths adds one series, not many).
UNMATCHED = "unmatched"

Refresher = Callable[[], Awaitable[None]]


def multiprocess() -> bool:
    """True in a worker of ``blaze serve --workers N``: values live in files shared by the workers."""
    return bool(os.environ.get(MULTIPROC_DIR))


class Metrics:
    """One app's metrics. ``render(accept)`` is the body of ``GET /metrics`` and its content type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._refreshers: list[Refresher] = []
        self._calls: CallMetrics | None = None
        self._batches: BatchMetrics | None = None

    @property
    def calls(self) -> CallMetrics:
        if self._calls is None:
            self._calls = CallMetrics(self.registry)
        return self._calls

    @property
    def batches(self) -> BatchMetrics:
        if self._batches is None:
            self._batches = BatchMetrics(self.registry)
        return self._batches

    def on_scrape(self, refresh: Refresher) -> Refresher:
        """Run ``await refresh()`` before each scrape (at most 2 s; a failure leaves the values as they were)."""
        self._refreshers.append(refresh)
        return refresh

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        for refresh in self._refreshers:
            try:
                await asyncio.wait_for(refresh(), 2.0)
            except Exception as exc:
                log.debug("metrics refresher %r failed: %s", refresh, exc)
        encode, content_type = choose_encoder(accept or "")
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # reads the files of every worker
            return await asyncio.to_thread(encode, registry), content_type
        return encode(self.registry), content_type


class CallMetrics(Middleware):
    """Calls by model, transport and status; their latency, how many run now, and messages streamed.

    ``model`` is the model's name, or for an HTTP route that serves no model its path (``/v1/chat/completions``),
    or ``unmatched``. The code is the gRPC status name on both transports (HTTP 404 is ``NOT_FOUND``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "blazerpc_requests",
            "Calls finished, by model, transport and status code (gRPC status names on both transports).",
            ["model", "transport", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "blazerpc_request_duration_seconds",
            "Time from a call's head arriving to its answer's end (streams: the last message).",
            ["model", "transport"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "blazerpc_requests_in_flight",
            "Calls running now.",
            ["model", "transport"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.messages = Counter(
            "blazerpc_stream_messages",
            "Messages (gRPC) or events (SSE) sent by streaming calls.",
            ["model", "transport"],
            registry=registry,
        )
        self.http_targets: dict[str, str] = {}  # URL path -> its model's name or the path itself
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._counted: dict[tuple[str, str, str], Any] = {}

    def know_routes(self, paths: Iterable[str], models: Iterable[str]) -> None:
        """The HTTP app's route paths and the models it serves at ``/<model>``: the labels calls get."""
        self.http_targets = {path: path for path in paths}
        self.http_targets.update({f"/{name}": name for name in models})

    def _target(self, ctx: Context) -> str:
        if ctx.model is not None:
            return ctx.model
        return self.http_targets.get(ctx.path, UNMATCHED) if ctx.transport == "http" else ctx.path

    def _of(self, target: str, transport: str) -> tuple[Any, Any, Any]:
        series = self._series.get((target, transport))
        if series is None:
            labels = (target, transport)
            series = self.duration.labels(*labels), self.in_flight.labels(*labels), self.messages.labels(*labels)
            self._series[(target, transport)] = series
        return series

    def before(self, ctx: Context) -> None:
        gauge = self._of(self._target(ctx), ctx.transport)[1]
        gauge.inc()
        ctx.state["blazerpc.in_flight"] = gauge

    def after(self, ctx: Context) -> None:
        target = self._target(ctx)
        duration, _, messages = self._of(target, ctx.transport)
        gauge = ctx.state.pop("blazerpc.in_flight", None)
        if gauge is not None:  # refused before the middleware ran (e.g. a 413): never counted in
            gauge.dec()
        key = (target, ctx.transport, ctx.status.name)
        counted = self._counted.get(key)
        if counted is None:
            counted = self._counted[key] = self.requests.labels(*key)
        counted.inc()
        duration.observe(ctx.duration_s)
        if ctx.messages:
            messages.inc(ctx.messages)


class BatchMetrics:
    """Per batched model: requests per batch call, how long they queued, how many queue now."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.size = Histogram(
            "blazerpc_batch_size",
            "Requests per call of a batched model.",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "blazerpc_batch_queue_wait_seconds",
            "Time a request waited in its model's queue before its batch ran.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "blazerpc_batch_queue_depth",
            "Requests waiting in a batched model's queue.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )

    def of(self, model: str) -> ModelBatchMetrics:
        return ModelBatchMetrics(self.size.labels(model), self.queue_wait.labels(model), self.queue_depth.labels(model))


class ModelBatchMetrics:
    """One model's batch metrics, as its ``Batcher`` reports them (see ``batching.BatchObserver``)."""

    def __init__(self, size: Any, queue_wait: Any, queue_depth: Any) -> None:
        self.size, self.queue_wait, self.queue_depth = size, queue_wait, queue_depth

    def queued(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def ran(self, waits: Sequence[float]) -> None:
        self.size.observe(len(waits))
        for wait in waits:
            self.queue_wait.observe(wait)
