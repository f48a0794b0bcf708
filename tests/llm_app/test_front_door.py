"""The front door under abuse and at start-up: big bodies, big prompts, requests before the model is loaded."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from pathlib import Path

import httpx

from tests.conftest import blaze, free_port


def test_a_body_over_the_limit_gets_413_unread_with_a_short_answer(llm_server: tuple[int, int]) -> None:
    port, _ = llm_server
    big = b'{"prompt": "' + b"x" * (10 * 2**20) + b'"}'
    for path, shape in [("/generate", "status"), ("/v1/completions", "type")]:
        reply = httpx.post(f"http://127.0.0.1:{port}{path}", content=big, headers={"content-type": "application/json"})
        assert reply.status_code == 413 and len(reply.content) < 300
        assert "larger than 4194304 bytes" in reply.json()["error"]["message"] and shape in reply.json()["error"]
    chunked = httpx.post(
        f"http://127.0.0.1:{port}/generate", content=iter([big[i : i + 2**20] for i in range(0, len(big), 2**20)])
    )
    assert chunked.status_code == 413


def test_validation_errors_quote_a_short_prefix_of_the_value(llm_server: tuple[int, int]) -> None:
    port, _ = llm_server
    for body in [{"prompt": "word " * 200_000}, {"prompt": "hi", "max_tokens": "9" * 500_000}]:
        reply = httpx.post(f"http://127.0.0.1:{port}/generate", json=body, timeout=60)
        assert reply.status_code == 422 and len(reply.content) < 1000, reply.text[:2000]
    openai = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "x" * 500_000, "prompt": "hi"})
    assert openai.status_code == 404 and len(openai.content) < 1000


def test_health_answers_fast_while_a_1_mb_prompt_is_checked(llm_server: tuple[int, int]) -> None:
    port, _ = llm_server

    async def go() -> tuple[list[float], list[int]]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            prompts = ["word " * 200_000, "word " * 30_000]  # 1 MB: refused untokenized; 150 KB: tokenized, refused
            bodies = [json.dumps({"prompt": p}).encode() for p in prompts * 3]  # encoded before the clock runs
            headers = {"content-type": "application/json"}
            posts = [asyncio.create_task(http.post("/generate", content=b, headers=headers)) for b in bodies]
            latencies = []
            while not all(p.done() for p in posts) or len(latencies) < 50:
                started = time.perf_counter()
                assert (await http.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)
            return latencies, [(await p).status_code for p in posts]

    latencies, codes = asyncio.run(go())
    assert codes == [422] * 6
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    worst = max(latencies)
    print(f"/health during 1 MB prompts: {len(latencies)} polls, p99 {p99 * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
    # An order of magnitude, not a timing: checking the prompts on the loop stalled it for seconds.
    assert worst < 1.0


def test_a_request_sent_as_soon_as_the_port_accepts_is_answered(tiny_dir: Path, process_cleanup: list) -> None:
    port = free_port()
    proc = blaze("llm", "--model", str(tiny_dir), "--host", "127.0.0.1", "--port", str(port), "--no-grpc",
                 "--max-model-len", "512", "--kv-cache-mb", "16")  # fmt: skip
    process_cleanup.append(proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not open its port"
            time.sleep(0.005)
    ready_then = httpx.get(f"http://127.0.0.1:{port}/ready").status_code
    body = {"prompt": "hello", "max_tokens": 3, "ignore_eos": True}
    reply = httpx.post(f"http://127.0.0.1:{port}/generate", json=body, timeout=120)
    assert reply.status_code == 200 and reply.json()["num_tokens"] == 3
    print(f"/ready when the port opened: {ready_then}")


def test_health_answers_while_long_prompts_flood_the_engine_pipe(llm_server: tuple[int, int]) -> None:
    """100 requests of ~1,800 tokens at once: their "add" commands are ~6 KB each, more than the
    pipe holds while the engine is in a long prefill; sending them once blocked the loop 5-11 s."""
    port, _ = llm_server

    async def go() -> list[float]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
            bodies = [{"prompt": f"{i} " + "word " * 1800, "max_tokens": 1} for i in range(100)]
            posts = [asyncio.create_task(http.post("/generate", json=b)) for b in bodies]
            latencies = []
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert (await http.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)
            for post in posts:  # the clients leave: their requests are aborted
                post.cancel()
            await asyncio.gather(*posts, return_exceptions=True)
            return latencies

    latencies = asyncio.run(go())
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"/health during 100 x 1,800-token prompts: {len(latencies)} polls, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.5  # an order of magnitude below the 5.5-10.9 s stalls it had
