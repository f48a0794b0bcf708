"""blazerpc's gRPC layer vs a hand-written grpclib servicer sending the same messages.

Unary echo with 64 calls in flight on one connection, and one server stream of 20,000
small messages. Both servers run in one child process (only one is busy at a time); the
client is the same grpclib client for both. Rounds are interleaved; medians are printed.

    python benchmarks/grpc_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from _common import free_port, median, spawn, table, wait_port
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

from blazerpc import BlazeApp, BlazeServer, ServeConfig
from blazerpc.protobuf.descriptors import Schema

UNARY_CALLS = 4_000
IN_FLIGHT = 64
STREAM_MESSAGES = 20_000

app = BlazeApp("bench")


@app.model("echo")
async def echo(text: str) -> str:
    return text


@app.model("count", streaming=True)
async def count(n: int) -> AsyncIterator[str]:
    for _ in range(n):
        yield "token"


SCHEMA = Schema.of(app.registry)
EchoRequest = SCHEMA.message_class("EchoRequest")
EchoResponse = SCHEMA.message_class("EchoResponse")
CountRequest = SCHEMA.message_class("CountRequest")
CountResponse = SCHEMA.message_class("CountResponse")


class RawServicer:
    """What one would write by hand with grpclib and the same protobuf messages."""

    async def echo(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        await stream.send_message(EchoResponse(result=request.text))

    async def count(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        for _ in range(request.n):
            await stream.send_message(CountResponse(result="token"))

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/blazerpc.InferenceService/PredictEcho": Handler(
                self.echo, Cardinality.UNARY_UNARY, EchoRequest, EchoResponse
            ),
            "/blazerpc.InferenceService/PredictCount": Handler(
                self.count, Cardinality.UNARY_STREAM, CountRequest, CountResponse
            ),
        }


async def serve(blaze_port: int, raw_port: int) -> None:
    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=blaze_port, http_port=None))
    await server.start()
    raw = Server([RawServicer()])
    await raw.start("127.0.0.1", raw_port)
    await asyncio.Event().wait()


async def unary_rate(port: int) -> float:
    channel = Channel("127.0.0.1", port)
    call = UnaryUnaryMethod(channel, "/blazerpc.InferenceService/PredictEcho", EchoRequest, EchoResponse)
    await call(EchoRequest(text="warm"))
    remaining = UNARY_CALLS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            reply = await call(EchoRequest(text="hello"))
            assert reply.result == "hello"

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    channel.close()
    return UNARY_CALLS / elapsed


async def stream_rate(port: int) -> float:
    channel = Channel("127.0.0.1", port)
    call = UnaryStreamMethod(channel, "/blazerpc.InferenceService/PredictCount", CountRequest, CountResponse)
    started = time.perf_counter()
    replies = await call(CountRequest(n=STREAM_MESSAGES))
    elapsed = time.perf_counter() - started
    assert len(replies) == STREAM_MESSAGES
    channel.close()
    return STREAM_MESSAGES / elapsed


async def measure(rounds: int) -> None:
    blaze_port, raw_port = free_port(), free_port()
    child = spawn(__file__, "--serve", str(blaze_port), str(raw_port))
    try:
        wait_port(blaze_port)
        wait_port(raw_port)
        results: dict[str, list[float]] = {k: [] for k in ("unary_blaze", "unary_raw", "stream_blaze", "stream_raw")}
        for r in range(rounds):
            order = [("blaze", blaze_port), ("raw", raw_port)]
            if r % 2:
                order.reverse()
            for name, port in order:
                results[f"unary_{name}"].append(await unary_rate(port))
                results[f"stream_{name}"].append(await stream_rate(port))
    finally:
        child.terminate()
        child.wait()
    rows = []
    for kind, unit, target in (("unary", "req/s", 0.85), ("stream", "msg/s", 0.8)):
        ours, raw = median(results[f"{kind}_blaze"]), median(results[f"{kind}_raw"])
        label = f"unary echo, {IN_FLIGHT} in flight" if kind == "unary" else f"stream of {STREAM_MESSAGES:,}"
        rows.append([label, unit, ours, raw, f"{ours / raw:.2f}x", f">= {target}x"])
    print(f"gRPC overhead, median of {rounds} interleaved rounds")
    print(table(["benchmark", "unit", "blazerpc", "raw grpclib", "ratio", "target"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("BLAZE_PORT", "RAW_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
    else:
        asyncio.run(measure(args.rounds))


if __name__ == "__main__":
    sys.exit(main())
