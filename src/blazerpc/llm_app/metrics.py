"""The LLM's metrics: vLLM's set and names, ``blazerpc_llm_`` in place of ``vllm:``.

Per request (measured where the server sees the tokens arrive): time to first token, the gaps
between tokens, end-to-end latency, queue time (first token less its prefill), prefill and
decode time, prompt and generated lengths, and how it finished (stop, length, abort: the
client left; error). Read from the engine at each scrape: requests running and waiting, KV
cache usage, preemptions and prefix-cache queries and hits (counters that carry on across
engine restarts). Label: ``model_name``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..errors import BlazeError, Status
from ..llm.protocol import EngineRuntime, EngineStats, TokenEvent

# vLLM's buckets, with finer steps below 10 ms where a CPU decode step lands.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
               0.75, 1, 2.5, 5, 10)  # fmt: skip
REQUEST_BUCKETS = (0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
FINISH_REASONS = ("stop", "length", "abort", "error")


class LLMMetrics:
    def __init__(self, registry: CollectorRegistry, model_name: Callable[[], str]) -> None:
        self.model_name = model_name
        labels = ["model_name"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"blazerpc_llm_{name}", doc, labels, buckets=buckets, registry=registry)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(f"blazerpc_llm_{name}", doc, [*labels, *extra], registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"blazerpc_llm_{name}", doc, labels, multiprocess_mode="mostrecent", registry=registry)

        self.ttft = histogram("time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between two tokens of a request.", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Arrival to last token.", REQUEST_BUCKETS)
        self.queue = histogram(
            "request_queue_time_seconds", "Time to first token less its prefill: queued.", REQUEST_BUCKETS
        )
        self.prefill = histogram("request_prefill_time_seconds", "Steps spent on the prompt.", REQUEST_BUCKETS)
        self.decode = histogram("request_decode_time_seconds", "First token to last.", REQUEST_BUCKETS)
        self.prompt_len = histogram("request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS)
        self.generation_len = histogram("request_generation_tokens", "Tokens generated per request.", TOKEN_BUCKETS)
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens prefilled (cached ones included).")
        self.generation_tokens = counter("generation_tokens", "Tokens generated.")
        self.finished = counter("request_success", "Requests finished, by finish reason.", ("finished_reason",))
        self.running = gauge("num_requests_running", "Requests decoding or prefilling now.")
        self.waiting = gauge("num_requests_waiting", "Requests queued for the engine.")
        self.kv_usage = gauge("kv_cache_usage_perc", "Fraction of KV-cache blocks held by requests (0-1).")
        self.preemptions = counter("num_preemptions", "Requests preempted for KV-cache room.")
        self.prefix_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.engine_info = Gauge(
            "blazerpc_llm_engine_info",
            "What the engine runs as (value 1): device, matrices' dtype, decode weights, CPU class, kernels.",
            [*labels, "device", "dtype", "weights", "isa", "kernels"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self._engine: tuple[int | None, tuple[int, int, int]] = (None, (0, 0, 0))  # its pid, counters last read

    async def observe(
        self, events: AsyncGenerator[TokenEvent], prompt_tokens: int, arrived: float
    ) -> AsyncGenerator[TokenEvent]:
        """``events``, passed on as they come, with the request's timings recorded."""
        name = self.model_name()
        itl, generated = self.itl.labels(name), self.generation_tokens.labels(name)
        first = last = 0.0
        tokens = 0
        reason = "abort"
        try:
            async for event in events:
                now = time.perf_counter()
                if tokens:
                    itl.observe(now - last)
                else:
                    first = now
                    self.prompt_tokens.labels(name).inc(prompt_tokens)
                    self.prompt_len.labels(name).observe(prompt_tokens)
                    self.ttft.labels(name).observe(now - arrived)
                    prefill_s = event.step_ms / 1000
                    self.prefill.labels(name).observe(prefill_s)
                    self.queue.labels(name).observe(max(0.0, now - arrived - prefill_s))
                last = now
                tokens += 1
                generated.inc()
                if event.finish_reason is not None:
                    reason = event.finish_reason
                yield event
        except BlazeError as exc:
            refused = exc.status is Status.RESOURCE_EXHAUSTED and not tokens  # the engine was full: never ran
            reason = "" if refused else "error"
            raise
        finally:
            await events.aclose()  # left early: the engine aborts the request
            if reason:
                self.finished.labels(name, reason).inc()
                self.e2e.labels(name).observe((last or time.perf_counter()) - arrived)
                self.generation_len.labels(name).observe(tokens)
                if tokens:
                    self.decode.labels(name).observe(last - first)

    def engine_ready(self, runtime: EngineRuntime) -> None:
        """``blazerpc_llm_engine_info``: one series, for what the engine (re)started as."""
        self.engine_info.clear()
        fields = (runtime.device, runtime.dtype, runtime.weights, runtime.isa, runtime.kernels)
        self.engine_info.labels(self.model_name(), *fields).set(1)

    def engine_says(self, stats: EngineStats, engine_pid: int | None) -> None:
        """Gauges and engine counters from the stats of the engine process ``engine_pid`` (a new
        process counts from zero again)."""
        name = self.model_name()
        self.running.labels(name).set(stats.running)
        self.waiting.labels(name).set(stats.waiting)
        self.kv_usage.labels(name).set(1 - stats.free_blocks / stats.num_blocks if stats.num_blocks else 0.0)
        totals = (stats.preemptions, stats.prefix_cache_queries, stats.prefix_cache_hits)
        pid, before = self._engine
        if pid != engine_pid:
            before = (0, 0, 0)
        counters = (self.preemptions, self.prefix_queries, self.prefix_hits)
        for counter, now, then in zip(counters, totals, before, strict=True):
            counter.labels(name).inc(max(0, now - then))  # zero too: the series exists from the first scrape
        self._engine = (engine_pid, totals)
