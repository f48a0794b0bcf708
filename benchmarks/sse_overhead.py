"""blazerpc's HTTP/SSE layer vs a bare FastAPI ``StreamingResponse`` generator.

1. One stream of 20,000 small chunks, interleaved rounds, median events/s, through: bare
   FastAPI; blazerpc bare (metrics and access log off); blazerpc in production dress (metrics,
   an API key checked, access log lines written); blazerpc bare over TLS. Plus unary JSON
   calls/s (8 connections, keep-alive) through the three blazerpc servers.
2. ``/health`` latency (p50/p99) while 8 CPU-bound sync generators stream.

    python benchmarks/sse_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import uvicorn
from _common import cpu_line, free_port, median, percentile, quiet_access_log, spawn, table, tls_files, wait_port
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from blazerpc import BlazeApp, BlazeServer, ServeConfig

CHUNKS = 20_000
STREAMS = 8
BURN_SECONDS = 3.0
UNARY_CALLS = 2_000
CONNECTIONS = 8
API_KEY = "bench-key"
VARIANTS = ("fastapi", "bare", "production", "tls")

app = BlazeApp("bench")


@app.model("count", streaming=True)
async def count(n: int) -> AsyncIterator[str]:
    for _ in range(n):
        yield "token"


@app.model("echo")
async def echo(text: str) -> str:
    return text


@app.model("burn", streaming=True)
def burn(seconds: float) -> Iterator[int]:
    """Pure-Python CPU work (holds the GIL), yielding now and then."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(range(5000))
        yield n


bare = FastAPI()


class CountRequest(BaseModel):
    n: int
    stream: bool = True


@bare.post("/count")
async def bare_count(request: CountRequest) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for _ in range(request.n):
            yield f"data: {json.dumps({'result': 'token'})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def serve(ports: dict[str, int], certs: Path) -> None:
    quiet_access_log()
    bare_config = ServeConfig(
        host="127.0.0.1", grpc_port=None, http_port=ports["bare"], metrics=False, access_log=False
    )
    configs = [
        bare_config,
        replace(bare_config, http_port=ports["production"], metrics=True, access_log=True, api_keys=(API_KEY,)),
        replace(bare_config, http_port=ports["tls"], ssl_certfile=str(certs / "cert.pem"),
                ssl_keyfile=str(certs / "key.pem")),
    ]  # fmt: skip
    for config in configs:
        await BlazeServer(app, config).start()
    config = uvicorn.Config(bare, host="127.0.0.1", port=ports["fastapi"], http="httptools", log_level="warning")
    await uvicorn.Server(config).serve()


class Client:
    """How each variant is called: TLS with the test CA, the API key as a bearer token."""

    def __init__(self, variant: str, port: int, certs: Path) -> None:
        self.port = port
        self.ssl = ssl.create_default_context(cafile=str(certs / "ca.pem")) if variant == "tls" else None
        self.headers = {"Authorization": f"Bearer {API_KEY}"} if variant == "production" else {}
        self.base_url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"


async def stream_rate(client: Client) -> float:
    """Events/s of one stream, read with a bare socket so the client costs next to nothing."""
    body = json.dumps({"n": CHUNKS, "stream": True}).encode()
    auth = "".join(f"{k}: {v}\r\n" for k, v in client.headers.items()).encode()
    request = (
        b"POST /count HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" + auth +
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", client.port, ssl=client.ssl, server_hostname="localhost" if client.ssl else None
    )
    started = time.perf_counter()
    writer.write(request)
    events, tail = 0, b""
    while data := await reader.read(1 << 16):
        events += (tail + data).count(b"\n\n")  # an event boundary may straddle two reads
        tail = data[-1:]
    elapsed = time.perf_counter() - started
    writer.close()
    assert events == CHUNKS + 1, events
    return CHUNKS / elapsed


async def unary_rate(client: Client) -> float:
    """JSON calls/s over ``CONNECTIONS`` keep-alive connections."""
    limits = httpx.Limits(max_connections=CONNECTIONS)
    verify: ssl.SSLContext | bool = client.ssl or True
    async with httpx.AsyncClient(base_url=client.base_url, headers=client.headers, limits=limits, verify=verify) as h:
        await h.post("/echo", json={"text": "warm"})
        remaining = UNARY_CALLS

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                reply = await h.post("/echo", json={"text": "hello"})
                assert reply.status_code == 200, reply.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return UNARY_CALLS / (time.perf_counter() - started)


async def health_under_load(client: httpx.AsyncClient, port: int) -> list[float]:
    base = f"http://127.0.0.1:{port}"
    streams = [
        asyncio.create_task(client.post(f"{base}/burn", json={"seconds": BURN_SECONDS, "stream": True}, timeout=60))
        for _ in range(STREAMS)
    ]
    latencies = []
    await asyncio.sleep(0.2)
    while not all(s.done() for s in streams):
        started = time.perf_counter()
        reply = await client.get(f"{base}/health")
        latencies.append(time.perf_counter() - started)
        assert reply.status_code == 200
        await asyncio.sleep(0.01)
    await asyncio.gather(*streams)
    return latencies


async def measure(rounds: int) -> None:
    ports = {variant: free_port() for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        tls_files(certs)
        child = spawn(__file__, "--serve", str(certs), *(str(ports[v]) for v in VARIANTS))
        try:
            for port in ports.values():
                wait_port(port)
            clients = {variant: Client(variant, ports[variant], certs) for variant in VARIANTS}
            streams: dict[str, list[float]] = {v: [] for v in VARIANTS}
            calls: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
            for client in clients.values():
                await stream_rate(client)  # warm up
            for r in range(rounds):
                for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:  # rotate who goes first
                    streams[variant].append(await stream_rate(clients[variant]))
                    if variant in calls:
                        calls[variant].append(await unary_rate(clients[variant]))
            async with httpx.AsyncClient(timeout=60) as client:
                latencies = await health_under_load(client, ports["bare"])
        finally:
            child.terminate()
            child.wait()
    fastapi, bare_stream, dressed_stream, tls_stream = (median(streams[v]) for v in VARIANTS)
    bare_calls, dressed_calls, tls_calls = (median(calls[v]) for v in VARIANTS[1:])
    print(f"HTTP overhead, median of {rounds} interleaved rounds ({cpu_line()})")
    headers = ["benchmark", "unit", "bare FastAPI", "blazerpc bare", "bare/FastAPI", "+metrics+key+log", "/bare",
               "TLS", "/bare"]  # fmt: skip
    rows = [
        [f"one {CHUNKS:,}-chunk SSE stream", "events/s", fastapi, bare_stream, f"{bare_stream / fastapi:.2f}x",
         dressed_stream, f"{dressed_stream / bare_stream:.2f}x", tls_stream, f"{tls_stream / bare_stream:.2f}x"],
        [f"unary JSON, {CONNECTIONS} connections", "calls/s", "", bare_calls, "", dressed_calls,
         f"{dressed_calls / bare_calls:.2f}x", tls_calls, f"{tls_calls / bare_calls:.2f}x"],
    ]  # fmt: skip
    print(table(headers, rows))
    print("targets: bare/FastAPI >= 0.8x; metrics + API key + access log >= 0.95x of bare")
    print()
    print(f"/health while {STREAMS} CPU-bound sync streams run for {BURN_SECONDS:.0f} s ({len(latencies)} polls)")
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(table(["p50 ms", "p99 ms", "max ms", "target"], [[p50, p99, max(latencies) * 1000, "p99 < 50 ms"]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", nargs=1 + len(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        certs, *ports = args.serve
        asyncio.run(serve(dict(zip(VARIANTS, map(int, ports), strict=True)), Path(certs)))
    else:
        asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    main()
