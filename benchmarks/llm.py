"""The LLM server under 1, 4, 16 and 32 concurrent streaming clients over HTTP.

Each client streams requests of ~100 prompt tokens and 128 new tokens (``ignore_eos``) from
``blaze llm`` (started here on free ports) and records time to first token (TTFT) and the
gaps between tokens (ITL); ``/health`` is polled every 50 ms throughout. The baseline is
llama-cpp-python on the same GGUF file, serving the same requests one at a time (as its own
server does), when it is installed in ``--llama-venv`` (``--install-llama`` builds it there:
~11 minutes of compiling, once).

    python benchmarks/llm.py [--levels 1,4,16,32] [--requests-per-client 2] [--stagger 8]

Clients start spread over ``--stagger`` seconds (as users arrive), then each sends its
requests back to back. ``tok/s`` counts every token over the whole level, arrivals and the
tail included; ``tok/s, all streaming`` only the window in which every client of the level
has a request in flight (from the last client's first request to the first client's last token).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import ROOT, free_port, percentile, table, wait_port

NEW_TOKENS = 128
TOPICS = ["rivers", "volcanoes", "bread", "chess", "glaciers", "violins", "bees", "lighthouses"]


def prompt(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    text = (
        f"You are writing an encyclopedia entry about {topic}. Cover their history, how they work, "
        f"why people care about them, a surprising fact, and a short summary. Keep a neutral tone, "
        f"use plain words, and write in full sentences for a curious reader who knows nothing about "
        f"{topic} yet. Entry number {i}: begin with a one-line definition of {topic}, then continue "
        "with the history section, then the remaining sections in the order given above."
    )
    return text


async def stream_one(http: httpx.AsyncClient, i: int) -> tuple[float, list[float]]:
    """Send request ``i``; returns when it was sent and when each token event arrived."""
    body = {"prompt": prompt(i), "max_tokens": NEW_TOKENS, "temperature": 0.7, "seed": i, "ignore_eos": True,
            "stream": True}  # fmt: skip
    started = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", "/generate", json=body) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    return started, stamps


async def level(port: int, clients: int, per_client: int, stagger: float = 0.0) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        health: list[float] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                t = time.perf_counter()
                reply = await http.get("/health")
                assert reply.status_code == 200
                health.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)

        async def client(c: int) -> list[tuple[float, list[float]]]:
            await asyncio.sleep(c * stagger)  # arrivals spread over one request's duration
            return [await stream_one(http, c * per_client + r) for r in range(per_client)]

        poller = asyncio.create_task(poll())
        started = time.perf_counter()
        by_client = await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - started
        done.set()
        await poller
    results = [r for rs in by_client for r in rs]
    ttfts = [stamps[0] - sent for sent, stamps in results]
    gaps = [b - a for _, stamps in results for a, b in itertools.pairwise(stamps)]
    tokens = sorted(t for _, stamps in results for t in stamps)
    # steady state: from the last client's first request to the first client's last token
    window = (max(rs[0][0] for rs in by_client), min(rs[-1][1][-1] for rs in by_client))
    in_window = sum(window[0] <= t <= window[1] for t in tokens)
    return {
        "clients": clients,
        "tok_s": len(tokens) / wall,
        "steady_tok_s": in_window / (window[1] - window[0]) if window[1] > window[0] else float("nan"),
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "itl_p50": percentile(gaps, 50),
        "itl_p99": percentile(gaps, 99),
        "health_p99": percentile(health, 99),
        "tokens": len(tokens),
    }


LLAMA_SCRIPT = """
import json, sys, time
from llama_cpp import Llama
path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompts = json.loads(sys.stdin.read())
llm = Llama(model_path=path, n_ctx=2048, n_threads=threads, verbose=False, seed=0)
out = []
for p in prompts:
    started = time.perf_counter(); stamps = []
    no_eos = {2: -100.0, 0: -100.0}  # as ignore_eos: always n tokens
    for chunk in llm.create_completion(p, max_tokens=n, temperature=0.7, stream=True, logit_bias=no_eos):
        stamps.append(time.perf_counter())
    out.append({"ttft": stamps[0] - started, "decode_s": stamps[-1] - stamps[0], "tokens": len(stamps)})
print(json.dumps(out))
"""


def llama_baseline(venv: Path, model: Path, threads: int, requests: int) -> dict[str, float] | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", LLAMA_SCRIPT, str(model), str(NEW_TOKENS), str(threads)],
        input=json.dumps([prompt(i) for i in range(requests)]), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        print("llama-cpp-python failed:", done.stderr.strip().splitlines()[-1:], file=sys.stderr)
        return None
    runs = json.loads(done.stdout)
    tokens = sum(r["tokens"] for r in runs)
    wall = sum(r["ttft"] + r["decode_s"] for r in runs)
    return {
        "tok_s": tokens / wall,
        "decode_tok_s": sum(r["tokens"] - 1 for r in runs) / sum(r["decode_s"] for r in runs),
        "ttft_p50": percentile([r["ttft"] for r in runs], 50),
    }


def install_llama(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "llama-cpp-python"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument(
        "--stagger", type=float, default=8.0, help="seconds over which the clients of a level start (0: all at once)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads for blaze llm (0: its default)")
    parser.add_argument("--dtype", default="auto", help="blaze llm --dtype (auto, float32, bfloat16)")
    parser.add_argument("--llama-venv", type=Path, default=Path(tempfile.gettempdir()) / "llamacpp-venv")
    parser.add_argument("--install-llama", action="store_true", help="pip install llama-cpp-python there first")
    args = parser.parse_args()

    from blazerpc.llm.config import EngineConfig
    from blazerpc.llm.device import torch_dtype
    from blazerpc.llm.model_files import default_model_path

    model = default_model_path()
    if args.install_llama and not (args.llama_venv / "bin" / "python").exists():
        install_llama(args.llama_venv)
    port = free_port()
    cmd = [sys.executable, "-m", "blazerpc.cli", "llm", "--host", "127.0.0.1", "--port", str(port), "--no-grpc"]
    cmd += ["--dtype", args.dtype]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    rows = []
    try:
        wait_port(port)
        while httpx.get(f"http://127.0.0.1:{port}/ready").status_code != 200:
            time.sleep(0.2)
        asyncio.run(level(port, 1, 1))  # warm up
        for clients in [int(c) for c in args.levels.split(",")]:
            rows.append(asyncio.run(level(port, clients, args.requests_per_client, args.stagger / clients)))
    finally:
        server.terminate()
        server.wait()
    baseline = llama_baseline(args.llama_venv, model, 2, 4)

    idle_ttft = rows[0]["ttft_p50"]
    dtype = str(torch_dtype(EngineConfig(dtype=args.dtype))).removeprefix("torch.")
    print(f"blaze llm ({dtype}), {model.name}, ~100-token prompts, {NEW_TOKENS} new tokens, streaming over HTTP")
    headers = ["clients", "tok/s", "tok/s, all streaming", "TTFT p50 ms", "TTFT p99 ms", "TTFT p50 / idle",
               "ITL p50 ms", "ITL p99 ms"]  # fmt: skip
    body = [
        [int(r["clients"]), r["tok_s"], r["steady_tok_s"], r["ttft_p50"] * 1000, r["ttft_p99"] * 1000,
         f"{r['ttft_p50'] / idle_ttft:.1f}x", r["itl_p50"] * 1000, r["itl_p99"] * 1000, r["health_p99"] * 1000]
        for r in rows
    ]  # fmt: skip
    print(table([*headers, "/health p99 ms"], body))
    print("targets: 1 client >= 30 tok/s; 32 clients >= 250 tok/s; TTFT p50 at 16 <= 3x idle; /health p99 < 50 ms")
    print()
    if baseline is None:
        print(f"baseline: llama-cpp-python not installed in {args.llama_venv} (use --install-llama)")
    else:
        ours = rows[0]
        print("baseline: llama-cpp-python (2 threads, same GGUF), requests one at a time")
        print(table(
            ["server", "tok/s (one stream)", "decode tok/s", "TTFT p50 ms"],
            [["llama.cpp", baseline["tok_s"], baseline["decode_tok_s"], baseline["ttft_p50"] * 1000],
             ["blaze llm, 1 client", ours["tok_s"], 1 / ours["itl_p50"], ours["ttft_p50"] * 1000]],
        ))  # fmt: skip
        best = max(r["tok_s"] for r in rows)
        print(f"blaze llm best aggregate / llama.cpp one-at-a-time: {best / baseline['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
