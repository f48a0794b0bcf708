"""The LLM's metrics count the work done: tokens, requests by finish reason, timings, engine state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from blazerpc.llm import cpu, kernels
from blazerpc.llm.config import EngineConfig
from blazerpc.llm.protocol import EngineStats
from blazerpc.llm_app.metrics import LLMMetrics
from blazerpc.llm_app.service import LLMService
from blazerpc.metrics import Metrics
from tests.conftest import serving
from tests.test_metrics import assert_documented, parse, total, value

CONFIG = EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=8, dtype="float32")
PROMPT = "Once upon a time, in a land far away, there lived a curious fox who"


async def test_counters_match_the_tokens_generated_and_how_requests_ended(tiny_dir: Path) -> None:
    service = LLMService(tiny_dir, CONFIG)
    async with (
        serving(service.app, grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http,
    ):
        model = service.door.model_name
        lengths = [5, 7, 9]
        answers = await asyncio.gather(
            *(
                http.post(
                    "/v1/completions",
                    json={"model": model, "prompt": f"{PROMPT} {n}", "max_tokens": n, "ignore_eos": True},
                )
                for n in lengths
            )
        )
        assert all(a.status_code == 200 for a in answers), answers[0].text
        usages = [a.json()["usage"] for a in answers]
        assert [u["completion_tokens"] for u in usages] == lengths
        stopped = await http.post(
            "/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 6, "stop": " "}
        )
        stopped_by_length = stopped.json()["choices"][0]["finish_reason"] == "length"
        stop_usage = stopped.json()["usage"]

        body = {"model": model, "prompt": PROMPT, "max_tokens": 400, "ignore_eos": True, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as sse:
            lines = sse.aiter_lines()
            while not (await anext(lines)).startswith("data: {"):
                pass  # one token arrived: leave
        await asyncio.sleep(0.3)  # the abort reaches the engine
        samples = parse((await http.get("/metrics")).text)

    def metric(name: str, **labels: str) -> float:
        return value(samples, f"blazerpc_llm_{name}", model_name=model, **labels)

    prompts = sum(u["prompt_tokens"] for u in usages) + 2 * stop_usage["prompt_tokens"]
    assert metric("prompt_tokens_total") == prompts
    aborted = metric("generation_tokens_total") - sum(lengths) - stop_usage["completion_tokens"]
    assert 1 <= aborted < 400, aborted  # what reached the server before the client left
    assert metric("request_success_total", finished_reason="length") == 3 + stopped_by_length
    assert metric("request_success_total", finished_reason="abort") == 1
    assert metric("request_success_total", finished_reason="error") == 0
    assert metric("time_to_first_token_seconds_count") == 5
    assert metric("e2e_request_latency_seconds_count") == 5
    assert metric("request_generation_tokens_sum") == metric("generation_tokens_total")
    assert metric("inter_token_latency_seconds_count") == metric("generation_tokens_total") - 5
    assert metric("request_prefill_time_seconds_sum") > 0
    assert metric("request_prefill_time_seconds_sum") <= metric("time_to_first_token_seconds_sum")
    assert metric("num_requests_running") == 0 and metric("num_requests_waiting") == 0
    assert 0 <= metric("kv_cache_usage_perc") <= 1
    # The stopped request and the aborted one share PROMPT: the second found its blocks cached.
    assert metric("prefix_cache_hits_total") > 0
    assert metric("prefix_cache_queries_total") >= prompts - 2
    assert total(samples, "blazerpc_requests_total", model="/v1/completions", code="OK") == 4
    assert total(samples, "blazerpc_requests_total", model="/v1/completions", code="CANCELLED") == 1
    # What the engine runs as, one series: float32 asked for, so full weights (auto); this CPU's class
    (info,) = [dict(ls) for (n, ls), v in samples.items() if n == "blazerpc_llm_engine_info" and v == 1]
    assert (info["model_name"], info["device"], info["dtype"], info["weights"]) == (model, "cpu", "float32", "full")
    assert info["isa"] == cpu.describe() and info["kernels"] == kernels.status()
    assert_documented(samples, r"blazerpc_llm_\w+")


async def test_engine_counters_carry_on_across_engine_processes() -> None:
    metrics = LLMMetrics(Metrics().registry, lambda: "m")

    def stats(preemptions: int, queries: int, hits: int) -> EngineStats:
        return EngineStats(3, 10, 40, running=2, waiting=1, preemptions=preemptions,
                           prefix_cache_queries=queries, prefix_cache_hits=hits)  # fmt: skip

    metrics.engine_says(stats(1, 100, 40), engine_pid=11)
    metrics.engine_says(stats(3, 150, 60), engine_pid=11)
    metrics.engine_says(stats(2, 30, 10), engine_pid=12)  # restarted: counts from zero
    assert metrics.preemptions.labels("m")._value.get() == 5
    assert metrics.prefix_queries.labels("m")._value.get() == 180
    assert metrics.prefix_hits.labels("m")._value.get() == 70
    assert metrics.kv_usage.labels("m")._value.get() == 0.75
    assert metrics.running.labels("m")._value.get() == 2
