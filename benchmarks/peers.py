"""``blaze llm`` against llama.cpp's ``llama-server`` and vLLM's CPU backend, on the same model file.

One workload for all three, over each one's OpenAI-compatible ``POST /v1/completions`` (streaming):
distinct ~100-token prompts, 64 new tokens each (``ignore_eos``), greedy, C clients sending
``--requests`` requests each, back to back. One server runs at a time (two would share the two
cores); each round starts every server in turn for all levels, so ``--rounds 2`` or more
interleaves them against a shared machine's slow phases. tok/s counts 64 tokens per request
(``ignore_eos`` makes every server produce exactly that many); TTFT and ITL come from the
arrival times of the streamed chunks. Prints the table and the ratios ours / peer.

The peers come from ``../shared/peers`` (``setup.sh`` once; ``PEERS_DIR``, default /tmp/peers):

    python benchmarks/peers.py [--levels 1,8,32] [--requests 3] [--peers llama,vllm] [--rounds 1]
        [--ours-flags "--max-num-batched-tokens 128"]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
from _common import ROOT, cpu_line, free_port, percentile, table

PEERS = ROOT.parent / "shared" / "peers"
NEW_TOKENS = 64
TOPICS = ["rivers", "volcanoes", "bread", "chess", "glaciers", "violins", "bees", "lighthouses"]


def prompt(i: int) -> str:
    """~100 tokens, distinct per request (no shared prefix beyond the first words)."""
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Entry {i}. You are writing an encyclopedia entry about {topic}. Cover their history, how they "
        f"work, why people care about them, a surprising fact, and a short summary. Keep a neutral tone, "
        f"use plain words, and write in full sentences for a curious reader who knows nothing about {topic} "
        f"yet. Begin with a one-line definition of {topic}, then continue with the history section."
    )


class Server:
    def __init__(self, name: str, command: Callable[[int], list[str]], ready_path: str, env: dict[str, str]) -> None:
        self.name, self.command, self.ready_path, self.env = name, command, ready_path, env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.model = ""

    def start(self, timeout: float = 600) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            self.command(self.port), env={**os.environ, **self.env}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2).status_code == 200:
                    self.model = httpx.get(f"http://127.0.0.1:{self.port}/v1/models").json()["data"][0]["id"]
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # by the process group we started, never by name
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def blazerpc(name: str = "blazerpc", *flags: str) -> Server:
    """``blaze llm`` over HTTP only, with ``flags`` added."""
    command = [sys.executable, "-m", "blazerpc.cli", "llm", "--host", "127.0.0.1", "--no-grpc", *flags]
    return Server(name, lambda port: [*command, "--port", str(port)], "/ready", {})


def vllm() -> Server:
    return Server("vLLM CPU", lambda port: ["bash", str(PEERS / "start-vllm.sh"), str(port)], "/health", {})


def llama_server(*flags: str) -> Server:
    """``start-llama-server.sh`` with ``flags`` added (``-c 65536`` gives each of its 32 slots 2,048 tokens)."""
    command = ["bash", str(PEERS / "start-llama-server.sh")]
    return Server("llama-server", lambda port: [*command, str(port), *flags], "/health", {})


def servers(peers: list[str], ours_flags: list[str]) -> list[Server]:
    found = [blazerpc("blazerpc", *ours_flags)]
    if "llama" in peers:
        found.append(llama_server())
    if "vllm" in peers:
        found.append(vllm())
    return found


async def stream_one(http: httpx.AsyncClient, model: str, i: int) -> tuple[float, list[float]]:
    body = {"model": model, "prompt": prompt(i), "max_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if line.startswith("data: {") and '"text"' in line:
                stamps.append(time.perf_counter())
    return started, stamps


async def level(server: Server, clients: int, requests: int, offset: int) -> dict[str, float]:
    # A new connection per request: llama-server closes kept-alive connections after a few requests.
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=600, limits=no_keepalive) as http:

        async def client(c: int) -> list[tuple[float, list[float]]]:
            return [await stream_one(http, server.model, offset + c * requests + r) for r in range(requests)]

        started = time.perf_counter()
        by_client = await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - started
    results = [r for rs in by_client for r in rs]
    gaps = [b - a for _, stamps in results for a, b in itertools.pairwise(stamps)]
    return {
        "tok_s": len(results) * NEW_TOKENS / wall,
        "ttft_p50": percentile([s[0] - t for t, s in results], 50),
        "ttft_p99": percentile([s[0] - t for t, s in results], 99),
        "itl_p50": percentile(gaps, 50),
        "itl_p99": percentile(gaps, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--peers", default="llama,vllm")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ours-flags", default="", help="more flags for blaze llm")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    all_servers = servers([p for p in args.peers.split(",") if p], shlex.split(args.ours_flags))
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    print(cpu_line())
    for rnd in range(args.rounds):
        for server in all_servers:  # one server at a time, each round in turn: interleaved
            server.start()
            try:
                asyncio.run(level(server, 1, 1, offset=10_000))  # warm-up
                for c in levels:
                    results.setdefault((server.name, c), []).append(
                        asyncio.run(level(server, c, args.requests, rnd * 1000))
                    )
                    print(
                        f"round {rnd} {server.name} {c} clients: {results[(server.name, c)][-1]['tok_s']:.1f} tok/s",
                        flush=True,
                    )
            finally:
                server.stop()

    def mean(name: str, c: int, key: str) -> float:
        values = [r[key] for r in results[(name, c)]]
        return sum(values) / len(values)

    peers = [s.name for s in all_servers[1:]]
    headers = ["server", "clients", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"]
    ms = ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99")
    rows = [[s.name, c, mean(s.name, c, "tok_s"), *(mean(s.name, c, k) * 1000 for k in ms)]
            for c in levels for s in all_servers]  # fmt: skip
    print(table(headers, rows))
    ratio_rows = [[c, *(mean("blazerpc", c, "tok_s") / mean(p, c, "tok_s") for p in peers)] for c in levels]
    print(table(["clients", *(f"blazerpc / {p} (tok/s)" for p in peers)], ratio_rows))


if __name__ == "__main__":
    main()
