"""Scaling out on Ray Serve: 1 vs 2 replicas of a CPU-bound model, and what Ray's proxy costs.

The model burns ~10 ms of one core per call in ``hashlib.pbkdf2_hmac`` (OpenSSL, which releases
the GIL, so the replica's event loop keeps answering), and each server runs one call at a time
(``max_threads=1``): a replica is one core's worth of model, as a model that fills a core would
be. Three servers, measured in interleaved rounds under ``--clients`` concurrent HTTP clients
(httpx, in this process):

- Ray Serve, 1 replica and 2 replicas (two applications on one local Ray instance, under
  ``/one`` and ``/two``), through Ray's HTTP proxy;
- ``blaze serve`` directly (a ``BlazeServer`` in a child process, same ``max_threads=1``).

Then one client at a time, for the latency a call pays for the proxy and the hop to a replica.

    python benchmarks/ray_scaling.py [--requests 400] [--rounds 3] [--clients 32] [--work-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
import time
from dataclasses import dataclass, field

import httpx

from blazerpc import BlazeApp, BlazeServer, ServeConfig

app = BlazeApp("ray-scaling")


@app.model("work")
def work(iterations: int) -> int:
    """``iterations`` rounds of PBKDF2-SHA256: CPU time outside the GIL."""
    return len(hashlib.pbkdf2_hmac("sha256", b"blazerpc", b"salt", iterations))


def calibrate(work_ms: float) -> int:
    """Iterations that take ``work_ms`` on this machine (the best of a few tries)."""
    trial = 20_000
    best = min(_timed(trial) for _ in range(5))
    return max(1, round(trial * work_ms / 1000 / best))


def _timed(iterations: int) -> float:
    started = time.perf_counter()
    work(iterations)
    return time.perf_counter() - started


@dataclass
class Samples:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, every call of every round


async def load(url: str, body: dict[str, int], requests: int, clients: int, samples: Samples) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        (await client.post(url, json=body)).raise_for_status()  # warm: connections, the replicas
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                (await client.post(url, json=body)).raise_for_status()
                samples.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        samples.rates.append(requests / (time.perf_counter() - started))


async def serve_directly(port: int) -> None:
    server = BlazeServer(app, ServeConfig(host="127.0.0.1", grpc_port=None, http_port=port, max_threads=1))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def start_ray(http_port: int) -> None:
    import ray
    from _common import ROOT
    from ray import serve

    from blazerpc.ray_serve import BlazeDeployment, ReplicaConfig

    config = ServeConfig(max_threads=1, access_log=False)
    one = BlazeDeployment("benchmarks.ray_scaling:app", ReplicaConfig(count=1, num_cpus=0), config, name="one")
    two = BlazeDeployment("benchmarks.ray_scaling:app", ReplicaConfig(count=2, num_cpus=0), config, name="two")
    ray.init(include_dashboard=False, runtime_env=one.runtime_env(working_dir=ROOT), log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(one.application(), name="one", route_prefix="/one")
    serve.run(two.application(), name="two", route_prefix="/two")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="calls per server per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--work-ms", type=float, default=10.0, help="CPU time of one call")
    parser.add_argument("--sequential", type=int, default=100, help="calls per server, one client at a time")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_directly(args.serve))
        return

    from _common import cpu_line, free_port, percentile, spawn, table, wait_port

    body = {"iterations": calibrate(args.work_ms)}
    direct_port, ray_port = free_port(), free_port()
    child = spawn(__file__, "--serve", str(direct_port))
    try:
        wait_port(direct_port)
        start_ray(ray_port)
        urls = {
            "blaze serve (direct)": f"http://127.0.0.1:{direct_port}/work",
            "Ray Serve, 1 replica": f"http://127.0.0.1:{ray_port}/one/work",
            "Ray Serve, 2 replicas": f"http://127.0.0.1:{ray_port}/two/work",
        }
        loaded = {name: Samples() for name in urls}
        for _ in range(args.rounds):  # interleaved: the machine's noise falls on every server alike
            for name, url in urls.items():
                asyncio.run(load(url, body, args.requests, args.clients, loaded[name]))
        alone = {name: Samples() for name in urls}
        for name, url in urls.items():
            asyncio.run(load(url, body, args.sequential, 1, alone[name]))
    finally:
        child.terminate()
        child.wait()
        if "ray" in sys.modules:
            from ray import serve

            serve.shutdown()
            sys.modules["ray"].shutdown()

    one = sorted(loaded["Ray Serve, 1 replica"].rates)[len(loaded["Ray Serve, 1 replica"].rates) // 2]
    direct_p50 = percentile(alone["blaze serve (direct)"].latencies, 50)
    rows = []
    for name in urls:
        rates = sorted(loaded[name].rates)
        rate = rates[len(rates) // 2]
        p50, p99 = (percentile(loaded[name].latencies, p) * 1000 for p in (50, 99))
        single = percentile(alone[name].latencies, 50)
        overhead = f"+{(single - direct_p50) * 1000:.2f} ms" if name != "blaze serve (direct)" else "-"
        rows.append([name, rate, f"{rate / one:.2f}x", p50, p99, single * 1000, overhead])
    print(
        f"{cpu_line()}; {args.clients} clients, ~{args.work_ms:g} ms of CPU per call ({body['iterations']} PBKDF2 "
        f"rounds), one call at a time per server; median of {args.rounds} rounds of {args.requests} calls"
    )
    headers = ["server", "req/s", "vs 1 replica", "p50 ms", "p99 ms", "p50 ms, 1 client", "vs direct, 1 client"]
    print(table(headers, rows))
    print("target: 2 replicas >= 1.5x one replica")


if __name__ == "__main__":
    main()
