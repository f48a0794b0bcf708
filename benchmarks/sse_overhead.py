"""blazerpc's HTTP/SSE layer vs a bare FastAPI ``StreamingResponse`` generator.

1. One stream of 20,000 small chunks through each, interleaved rounds, median events/s.
2. ``/health`` latency (p50/p99) while 8 CPU-bound sync generators stream.

    python benchmarks/sse_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from _common import free_port, median, percentile, spawn, table, wait_port
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from blazerpc import BlazeApp, BlazeServer, ServeConfig

CHUNKS = 20_000
STREAMS = 8
BURN_SECONDS = 3.0

app = BlazeApp("bench")


@app.model("count", streaming=True)
async def count(n: int) -> AsyncIterator[str]:
    for _ in range(n):
        yield "token"


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


async def serve(blaze_port: int, bare_port: int) -> None:
    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=None, http_port=blaze_port))
    await server.start()
    config = uvicorn.Config(bare, host="127.0.0.1", port=bare_port, http="httptools", log_level="warning")
    await uvicorn.Server(config).serve()


async def stream_rate(port: int) -> float:
    """Events/s of one stream, read with a bare socket so the client costs next to nothing."""
    body = json.dumps({"n": CHUNKS, "stream": True}).encode()
    request = (
        b"POST /count HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
    blaze_port, bare_port = free_port(), free_port()
    child = spawn(__file__, "--serve", str(blaze_port), str(bare_port))
    try:
        wait_port(blaze_port)
        wait_port(bare_port)
        ours, theirs = [], []
        async with httpx.AsyncClient(timeout=60) as client:
            await stream_rate(blaze_port)  # warm up both
            await stream_rate(bare_port)
            for r in range(rounds):
                if r % 2:
                    theirs.append(await stream_rate(bare_port))
                    ours.append(await stream_rate(blaze_port))
                else:
                    ours.append(await stream_rate(blaze_port))
                    theirs.append(await stream_rate(bare_port))
            latencies = await health_under_load(client, blaze_port)
    finally:
        child.terminate()
        child.wait()
    a, b = median(ours), median(theirs)
    print(f"SSE overhead, median of {rounds} interleaved rounds of one {CHUNKS:,}-chunk stream")
    print(
        table(
            ["server", "events/s", "ratio", "target"],
            [["blazerpc", a, f"{a / b:.2f}x", ">= 0.8x"], ["bare FastAPI", b, "1.00x", ""]],
        )
    )
    print()
    print(f"/health while {STREAMS} CPU-bound sync streams run for {BURN_SECONDS:.0f} s ({len(latencies)} polls)")
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(table(["p50 ms", "p99 ms", "max ms", "target"], [[p50, p99, max(latencies) * 1000, "p99 < 50 ms"]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("BLAZE_PORT", "BARE_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
    else:
        asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    main()
