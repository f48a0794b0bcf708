"""Prefix caching and chunked prefill: ``blaze llm`` against vLLM's CPU backend, llama-server and itself
with the cache off.

Three workloads over each server's OpenAI-compatible API (streaming, greedy), servers one at a
time and interleaved by ``--rounds``:

1. shared prefix: one ~750-token document in front of distinct ~20-token questions, 32 new
   tokens each (``ignore_eos``), 1 client and 8 clients sending ``--requests`` requests each;
   one warm-up request first (a system prompt is sent many times in a real deployment).
2. multi-turn chat: 8 conversations at once, 4 turns each over ``/v1/chat/completions``; the
   first message carries a distinct ~400-token document, each next turn resends the whole
   conversation (the answers included) plus a short question. TTFT of turn 1 vs turns 2-4.
3. long-prompt arrival: 8 streams decoding, then one ~1,800-token prompt; the inter-token
   latency of the 8 before it arrives and while it is prefilled (until its first token).

    python benchmarks/prefix.py [--rounds 1] [--requests 3] [--workloads shared,chat,long]
        [--peers vllm,llama] [--ours-flags "--max-num-batched-tokens 128"]

The peers come from ``../shared/peers`` (``setup.sh`` once; ``PEERS_DIR``, default /tmp/peers).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shlex
import time
from collections.abc import Callable

import httpx
from _common import cpu_line, percentile, table
from peers import Server, blazerpc, llama_server, vllm

NEW_TOKENS = 32
ITEMS = ["kettle", "bicycle", "lamp", "backpack", "camera", "blender", "tent", "guitar"]


def document(seed: int, sections: int) -> str:
    """Plain prose with numbers, ~25 tokens a section; ``seed`` makes it distinct."""
    return " ".join(
        f"Section {seed}.{i}: items bought in store {seed + i} may be returned within {10 + (i * 7 + seed) % 50} "
        f"days with a receipt, and repairs take {2 + i % 9} working days."
        for i in range(sections)
    )


SHARED = "You answer questions about the shop's return policy, briefly.\n\n" + document(0, 22)


def question(i: int) -> str:
    return f"\n\nQuestion {i}: how many days do I have to return a {ITEMS[i % len(ITEMS)]} bought in store {i % 30}?"


class Stream:
    """One streamed request: when it was sent and when each non-empty chunk arrived."""

    def __init__(self) -> None:
        self.sent = time.perf_counter()
        self.stamps: list[float] = []
        self.text = ""

    @property
    def ttft(self) -> float:
        return self.stamps[0] - self.sent


async def stream(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> Stream:
    out = Stream()
    async with http.stream("POST", path, json={**body, "stream": True, "temperature": 0}) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[6:])["choices"][0]
            piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if piece:
                out.stamps.append(time.perf_counter())
                out.text += piece
    return out


def client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=600)


async def shared_prefix(server: Server, clients: int, requests: int, offset: int) -> dict[str, float]:
    async with client(server) as http:

        async def one(i: int) -> Stream:
            body = {"model": server.model, "prompt": SHARED + question(i), "max_tokens": NEW_TOKENS, "ignore_eos": True}
            return await stream(http, "/v1/completions", body)

        await one(offset + 999)  # warm-up: the document is now cached where a cache exists

        async def user(c: int) -> list[Stream]:
            return [await one(offset + c * requests + r) for r in range(requests)]

        started = time.perf_counter()
        results = [s for got in await asyncio.gather(*(user(c) for c in range(clients))) for s in got]
        wall = time.perf_counter() - started
    return {
        "tok_s": len(results) * NEW_TOKENS / wall,
        "ttft_p50": percentile([s.ttft for s in results], 50),
        "ttft_p99": percentile([s.ttft for s in results], 99),
    }


async def multi_turn(server: Server, offset: int) -> dict[str, float]:
    follow_ups = ["What about store 3?", "And without a receipt?", "Summarise that in five words."]
    async with client(server) as http:

        async def conversation(c: int) -> list[float]:
            first = f"Here is our policy:\n{document(offset + c + 1, 12)}\n\nHow long are repairs in store {c}?"
            messages = [{"role": "user", "content": first}]
            ttfts = []
            for turn in range(4):
                body = {"model": server.model, "messages": messages, "max_tokens": NEW_TOKENS}
                got = await stream(http, "/v1/chat/completions", body)
                ttfts.append(got.ttft)
                messages += [{"role": "assistant", "content": got.text}]
                if turn < 3:
                    messages += [{"role": "user", "content": follow_ups[turn]}]
            return ttfts

        by_turn = list(zip(*await asyncio.gather(*(conversation(c) for c in range(8))), strict=True))
    later = [t for turn in by_turn[1:] for t in turn]
    return {"first_p50": percentile(by_turn[0], 50), "later_p50": percentile(later, 50)}


async def long_arrival(server: Server, offset: int) -> dict[str, float]:
    long_prompt = document(offset + 500, 49) + "\n\nWhich store has the longest repairs?"
    async with client(server) as http:
        window: list[float] = []  # [sent, first token] of the long prompt

        async def running(c: int) -> Stream:
            body = {"model": server.model, "prompt": f"Story {offset + c}: once upon a time", "max_tokens": 400,
                    "ignore_eos": True}  # fmt: skip
            return await stream(http, "/v1/completions", body)

        streams = [asyncio.create_task(running(c)) for c in range(8)]
        await asyncio.sleep(3)  # all 8 decoding by now
        window.append(time.perf_counter())
        body = {"model": server.model, "prompt": long_prompt, "max_tokens": 4, "ignore_eos": True}
        long = await stream(http, "/v1/completions", body)
        window.append(long.stamps[0])
        done = await asyncio.gather(*streams)

    def gaps(keep: Callable[[float, float], bool]) -> list[float]:
        return [b - a for s in done for a, b in itertools.pairwise(s.stamps) if keep(a, b)]

    before = gaps(lambda a, b: b < window[0])
    during = gaps(lambda a, b: b > window[0] and a < window[1])
    return {
        "before_p50": percentile(before, 50),
        "during_p50": percentile(during, 50),
        "during_p99": percentile(during, 99),
        "long_ttft": long.ttft,
    }


Row = dict[str, float]
Results = dict[tuple[str, str], list[Row]]


async def run_workloads(server: Server, workloads: list[str], requests: int, offset: int) -> dict[str, Row]:
    done: dict[str, Row] = {}
    if "shared" in workloads:
        for c in (1, 8):
            done[f"shared-{c}"] = await shared_prefix(server, c, requests, offset)
    if "chat" in workloads:
        done["chat"] = await multi_turn(server, offset)
    if "long" in workloads:
        done["long"] = await long_arrival(server, offset)
    return done


def report(results: Results, names: list[str], workloads: list[str]) -> None:
    def mean(server: str, workload: str, key: str) -> float:
        values = [r[key] for r in results[(server, workload)]]
        return sum(values) / len(values)

    ours, others = names[0], names[1:]
    if "shared" in workloads:
        rows = [[n, c, mean(n, f"shared-{c}", "tok_s"), *(mean(n, f"shared-{c}", k) * 1000 for k in ("ttft_p50",
                 "ttft_p99"))] for c in (1, 8) for n in names]  # fmt: skip
        print("\nshared prefix (~750-token document + ~20-token question, 32 new tokens)")
        print(table(["server", "clients", "tok/s", "TTFT p50 ms", "TTFT p99 ms"], rows))
        ratios = []
        for c in (1, 8):
            w = f"shared-{c}"
            tok = [mean(ours, w, "tok_s") / mean(n, w, "tok_s") for n in others]
            ratios.append([c, *tok, *(mean(ours, w, "ttft_p50") / mean(n, w, "ttft_p50") for n in others)])
        headers = ["clients", *(f"tok/s ours / {n}" for n in others), *(f"TTFT p50 ours / {n}" for n in others)]
        print(table(headers, ratios))
    if "chat" in workloads:
        rows = [[n, mean(n, "chat", "first_p50") * 1000, mean(n, "chat", "later_p50") * 1000,
                 mean(n, "chat", "later_p50") / mean(n, "chat", "first_p50")] for n in names]  # fmt: skip
        print("\nmulti-turn chat (8 conversations x 4 turns; turn 1 carries a ~400-token document)")
        print(table(["server", "turn 1 TTFT p50 ms", "turns 2-4 TTFT p50 ms", "later / first"], rows))
    if "long" in workloads:
        keys = ("before_p50", "during_p50", "during_p99", "long_ttft")
        rows = [[n, *(mean(n, "long", k) * 1000 for k in keys),
                 mean(n, "long", "during_p99") / mean(n, "long", "during_p50")] for n in names]  # fmt: skip
        print("\nlong-prompt arrival (8 streams decoding, then a ~1,800-token prompt): ITL of the 8")
        print(table(["server", "ITL p50 before ms", "ITL p50 during ms", "ITL p99 during ms", "long TTFT ms",
                     "p99 / p50 during"], rows))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=3, help="requests per client (shared prefix)")
    parser.add_argument("--workloads", default="shared,chat,long")
    parser.add_argument("--peers", default="vllm", help="vllm, llama (llama-server), both or none")
    parser.add_argument("--ours-flags", default="", help="more flags for both blazerpc servers")
    args = parser.parse_args()
    workloads, flags = args.workloads.split(","), shlex.split(args.ours_flags)
    ours, off = blazerpc("blazerpc", *flags), blazerpc("blazerpc, cache off", "--no-prefix-caching", *flags)
    peers = args.peers.split(",")
    servers = [ours, off] + [vllm()] * ("vllm" in peers) + [llama_server("-c", "65536")] * ("llama" in peers)
    print(cpu_line(), "| ours:", " ".join(flags) or "defaults")
    results: Results = {}
    for rnd in range(args.rounds):
        for server in servers:  # one at a time, each round in turn: interleaved
            server.start()
            try:
                for name, got in asyncio.run(run_workloads(server, workloads, args.requests, rnd * 100)).items():
                    results.setdefault((server.name, name), []).append(got)
                    print(f"round {rnd} {server.name} {name}: {got}", flush=True)
            finally:
                server.stop()
    report(results, [s.name for s in servers], workloads)


if __name__ == "__main__":
    main()
