"""blazerpc's gRPC layer vs a hand-written grpclib servicer sending the same messages.

Unary echo with 64 calls in flight on one connection, and one server stream of 20,000
small messages, against four servers in one child process (only one is busy at a time):
raw grpclib; blazerpc bare (metrics and access log off); blazerpc in production dress
(metrics, an API key checked on every call, access log lines written); blazerpc bare over
TLS. The client is the same grpclib client for all. Rounds are interleaved; medians printed.

    python benchmarks/grpc_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import cpu_seconds, free_port, median, quiet_access_log, spawn, table, tls_files, wait_port
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

from blazerpc import BlazeApp, BlazeServer, ServeConfig
from blazerpc.protobuf.descriptors import Schema

UNARY_CALLS = 4_000
IN_FLIGHT = 64
STREAM_MESSAGES = 20_000
API_KEY = "bench-key"
VARIANTS = ("raw", "bare", "production", "tls")

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


async def serve(ports: dict[str, int], certs: Path) -> None:
    quiet_access_log()
    bare = ServeConfig(host="127.0.0.1", grpc_port=ports["bare"], http_port=None, metrics=False, access_log=False)
    configs = {
        "bare": bare,
        "production": replace(bare, grpc_port=ports["production"], metrics=True, access_log=True, api_keys=(API_KEY,)),
        "tls": replace(bare, grpc_port=ports["tls"], ssl_certfile=str(certs / "cert.pem"),
                       ssl_keyfile=str(certs / "key.pem")),
    }  # fmt: skip
    for config in configs.values():
        await BlazeServer(app, config).start()
    raw = Server([RawServicer()])
    await raw.start("127.0.0.1", ports["raw"])
    await asyncio.Event().wait()


class Client:
    """How each variant is called: TLS with the test CA, the API key as metadata."""

    def __init__(self, variant: str, port: int, certs: Path) -> None:
        self.port = port
        self.ssl = ssl.create_default_context(cafile=str(certs / "ca.pem")) if variant == "tls" else None
        if self.ssl is not None:
            self.ssl.set_alpn_protocols(["h2"])
        self.metadata = {"authorization": f"Bearer {API_KEY}"} if variant == "production" else None

    def channel(self) -> Channel:
        return Channel("127.0.0.1", self.port, ssl=self.ssl)


async def unary_rate(client: Client) -> float:
    channel = client.channel()
    call = UnaryUnaryMethod(channel, "/blazerpc.InferenceService/PredictEcho", EchoRequest, EchoResponse)
    await call(EchoRequest(text="warm"), metadata=client.metadata)
    remaining = UNARY_CALLS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            reply = await call(EchoRequest(text="hello"), metadata=client.metadata)
            assert reply.result == "hello"

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    channel.close()
    return UNARY_CALLS / elapsed


async def stream_rate(client: Client) -> float:
    channel = client.channel()
    call = UnaryStreamMethod(channel, "/blazerpc.InferenceService/PredictCount", CountRequest, CountResponse)
    started = time.perf_counter()
    replies = await call(CountRequest(n=STREAM_MESSAGES), metadata=client.metadata)
    elapsed = time.perf_counter() - started
    assert len(replies) == STREAM_MESSAGES
    channel.close()
    return STREAM_MESSAGES / elapsed


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
            kinds = ("unary", "stream", "cpu")
            results: dict[str, list[float]] = {f"{kind}_{v}": [] for kind in kinds for v in VARIANTS}
            for r in range(rounds):
                order = list(VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)])  # rotate who goes first
                for variant in order:
                    cpu = cpu_seconds(child.pid)
                    results[f"unary_{variant}"].append(await unary_rate(clients[variant]))
                    results[f"cpu_{variant}"].append((cpu_seconds(child.pid) - cpu) / UNARY_CALLS * 1e6)
                    results[f"stream_{variant}"].append(await stream_rate(clients[variant]))
        finally:
            child.terminate()
            child.wait()
    rows = []
    for kind, unit in (("unary", "req/s"), ("stream", "msg/s")):
        raw, bare, dressed, tls = (median(results[f"{kind}_{v}"]) for v in VARIANTS)
        label = f"unary echo, {IN_FLIGHT} in flight" if kind == "unary" else f"stream of {STREAM_MESSAGES:,}"
        rows.append([label, unit, raw, bare, f"{bare / raw:.2f}x", dressed, f"{dressed / bare:.2f}x", tls,
                     f"{tls / bare:.2f}x"])  # fmt: skip
    print(f"gRPC overhead, median of {rounds} interleaved rounds")
    headers = ["benchmark", "unit", "raw grpclib", "blazerpc bare", "bare/raw", "+metrics+key+log", "/bare", "TLS",
               "/bare"]  # fmt: skip
    print(table(headers, rows))
    print("targets: bare/raw >= 0.85x (unary), 0.8x (stream); metrics + API key + access log >= 0.95x of bare")
    print()
    print("server CPU per unary call (us; the client's share is not in it)")
    raw, bare, dressed, tls = (median(results[f"cpu_{v}"]) for v in VARIANTS)
    cpu_headers = ["raw grpclib", "blazerpc bare", "+metrics+key+log", "added", "TLS", "added"]
    print(table(cpu_headers, [[raw, bare, dressed, f"{dressed / bare - 1:+.0%}", tls, f"{tls / bare - 1:+.0%}"]]))


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
    sys.exit(main())
