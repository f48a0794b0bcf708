"""Batched vs unbatched throughput of a vectorised numpy model under 64 concurrent clients.

The model: a fixed 512x512 matmul + softmax per row, plus ~20 ms of fixed cost per call
(Python work holding the GIL, as a framework's per-call overhead or a GPU launch would add).
Both versions are served over gRPC by blazerpc in a child process; the client is BlazeClient.
If ``blazerpc==2.2.1`` can be installed into a separate venv, its batching (which calls the
model once per item) is measured as a third column.

    python benchmarks/batching.py [--requests 640] [--skip-pypi]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import free_port, spawn, table, wait_port
from _numpy_model import FIXED_COST_S, fixed_cost, forward

from blazerpc import BlazeApp, BlazeClient, BlazeServer, ServeConfig, TensorInput, TensorOutput

CLIENTS = 64


def make_app(batching: bool) -> BlazeApp:
    app = BlazeApp(enable_batching=batching, max_batch_size=64, batch_timeout_ms=5.0)

    @app.model("classify")
    def classify(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 512]:
        return forward(x)

    return app


async def serve(port: int, batching: bool, stats_path: str) -> None:
    fixed_cost()  # calibrate before serving
    server = BlazeServer(make_app(batching), ServeConfig(host="127.0.0.1", grpc_port=port, http_port=None))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    batcher = server.batchers.get("classify")
    sizes = dict(batcher.stats.sizes) if batcher else {}
    Path(stats_path).write_text(json.dumps({str(k): v for k, v in sizes.items()}))
    await server.stop(0)


async def drive(port: int, requests: int) -> float:
    x = np.random.default_rng(1).random((1, 512), dtype=np.float32)
    async with BlazeClient("127.0.0.1", port) as client:
        await client.predict("classify", x=x)
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                out = await client.predict("classify", x=x)
                assert out.shape == (1, 512)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        return requests / (time.perf_counter() - started)


def measure(batching: bool, requests: int) -> tuple[float, dict[str, int]]:
    port = free_port()
    with tempfile.NamedTemporaryFile(suffix=".json") as stats:
        mode = "--batching" if batching else "--no-batching"
        child = spawn(__file__, "--serve", str(port), mode, "--stats", stats.name)
        try:
            wait_port(port)
            rate = asyncio.run(drive(port, requests))
        finally:
            child.terminate()
            child.wait()
        return rate, json.loads(Path(stats.name).read_text() or "{}")


PYPI_SCRIPT = """
import asyncio, sys, time
import numpy as np
sys.path.insert(0, {bench_dir!r})
from blazerpc import BlazeApp, BlazeClient, TensorInput, TensorOutput
from blazerpc.codegen.proto_types import _TensorProtoMsg
import _numpy_model as bench

app = BlazeApp(enable_batching=True, max_batch_size=64, batch_timeout_ms=5.0)

@app.model("classify")
def classify(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 512]:
    return bench.forward(np.asarray(x, dtype=np.float32).reshape(-1, 512))

async def drive(port, requests, clients):
    row = np.random.default_rng(1).random((1, 512), dtype=np.float32)
    x = _TensorProtoMsg(shape=[1, 512], dtype="float", data=row.tobytes())
    async with BlazeClient("127.0.0.1", port, registry=app.registry) as client:
        await client.predict("classify", x=x)
        remaining = requests
        async def worker():
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await client.predict("classify", x=x)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        print(requests / (time.perf_counter() - started))

if sys.argv[1] == "serve":
    asyncio.run(app.serve(host="127.0.0.1", port=int(sys.argv[2])))
else:
    asyncio.run(drive(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def measure_pypi(requests: int) -> tuple[float | None, str]:
    """BlazeRPC 2.2.1 in its own venv with its own client; None when it cannot be set up."""
    venv = Path(tempfile.gettempdir()) / "blazerpc-2.2.1-venv"
    python = str(venv / "bin" / "python")
    try:
        if not (venv / ".ready").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "blazerpc==2.2.1", "numpy"],
                           check=True, capture_output=True, timeout=600)  # fmt: skip
            (venv / ".ready").touch()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return None, f"could not install blazerpc==2.2.1: {exc}"
    script = Path(tempfile.gettempdir()) / "blazerpc_2_2_1_bench.py"
    script.write_text(PYPI_SCRIPT.format(bench_dir=str(Path(__file__).parent)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ""}
    child = subprocess.Popen([python, str(script), "serve", str(port)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port, timeout=60)
        done = subprocess.run([python, str(script), "drive", str(port), str(requests), str(CLIENTS)], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            return None, f"its client failed: {done.stderr.strip().splitlines()[-1:]}"
        return float(done.stdout.strip()), ""
    except TimeoutError:
        return None, "its server did not start"
    finally:
        child.terminate()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--skip-pypi", action="store_true", help="do not try blazerpc==2.2.1 from PyPI")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batching", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.batching, args.stats))
        return
    unbatched, _ = measure(False, max(args.requests // 8, CLIENTS))
    batched, sizes = measure(True, args.requests)
    pypi, why = (None, "skipped") if args.skip_pypi else measure_pypi(max(args.requests // 8, CLIENTS))
    rows = [["blazerpc, unbatched", unbatched, "1.00x"], ["blazerpc, batched", batched, f"{batched / unbatched:.1f}x"]]
    if pypi is not None:
        rows.append(["blazerpc 2.2.1 (PyPI), batching on", pypi, f"{pypi / unbatched:.2f}x"])
    print(f"{CLIENTS} concurrent clients, 512x512 matmul + softmax + {FIXED_COST_S * 1000:.0f} ms fixed cost per call")
    print(table(["server", "req/s", "vs unbatched"], rows))
    if pypi is None:
        print(f"(blazerpc 2.2.1 not measured: {why})")
    print("target: batched >= 8x unbatched")
    print()
    print("batch sizes (batched run)")
    ordered = sorted(sizes.items(), key=lambda kv: int(kv[0]))
    print(table(["size", "batches"], [[k, v] for k, v in ordered]))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
