"""Process supervision for ``blaze serve``: N workers sharing a port, and reload on change."""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from .app import BlazeApp
from .metrics import MULTIPROC_DIR
from .serving import ServeConfig, run

log = logging.getLogger("blazerpc")


def import_app(ref: str) -> BlazeApp:
    """``"package.module:app"`` -> the ``BlazeApp`` it names (the current directory is importable)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"app reference {ref!r} must look like 'module:attribute', e.g. 'app:app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, BlazeApp):
        raise ValueError(f"{ref} is a {type(app).__name__}, not a BlazeApp")
    return app


def _serve(ref: str, config: ServeConfig) -> None:
    run(import_app(ref), config)


def _spawn(ref: str, config: ServeConfig) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(ref, config), daemon=False)
    process.start()
    return process


def run_workers(ref: str, config: ServeConfig, workers: int) -> int:
    """Run ``workers`` processes, each binding the same ports with SO_REUSEPORT.

    Their metrics go to files in one directory (prometheus-client's multiprocess mode), so a
    scrape of any worker reports all of them: ``PROMETHEUS_MULTIPROC_DIR`` if set (it should be
    empty), else a temporary directory removed at the end.
    """
    if 0 in (config.grpc_port, config.http_port, config.metrics_port):
        raise ValueError("--workers above 1 needs fixed ports: with port 0 each worker would get its own")
    config = replace(config, reuse_port=True)
    with _metrics_dir(config.metrics):
        processes = [_spawn(ref, config) for _ in range(workers)]
        log.info("started %d workers: pids %s", workers, ", ".join(str(p.pid) for p in processes))
        _forward_signals(processes)
        for p in processes:
            p.join()
            if config.metrics and p.pid is not None:
                mark_process_dead(p.pid)  # type: ignore[no-untyped-call]  # its live gauges (calls in flight) stop counting
    return max((p.exitcode or 0) for p in processes)


@contextlib.contextmanager
def _metrics_dir(metrics: bool) -> Iterator[None]:
    if not metrics or os.environ.get(MULTIPROC_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="blazerpc-metrics-") as path:
        os.environ[MULTIPROC_DIR] = path  # the workers inherit it
        try:
            yield
        finally:
            del os.environ[MULTIPROC_DIR]


def run_with_reload(ref: str, config: ServeConfig, root: Path, interval: float = 0.5) -> int:
    """Serve in a child process and restart it whenever a ``.py`` file under ``root`` changes."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    snapshot = _mtimes(root)
    process = _spawn(ref, config)
    while not stopping:
        time.sleep(interval)
        current = _mtimes(root)
        if current != snapshot:
            changed = sorted(set(current.items()) ^ set(snapshot.items()))
            log.info("reloading: %s changed", changed[0][0] if changed else "a file")
            snapshot = current
            _stop(process, config.grace_period)
            process = _spawn(ref, config)
        elif not process.is_alive():
            time.sleep(interval)  # crashed: wait for an edit before restarting
    _stop(process, config.grace_period)
    return 0


def _mtimes(root: Path) -> dict[str, float]:
    out = {}
    for path in root.rglob("*.py"):
        if ".venv" in path.parts or "__pycache__" in path.parts:
            continue
        try:
            out[str(path)] = path.stat().st_mtime
        except OSError:
            pass
    return out


def _stop(process: BaseProcess, grace: float) -> None:
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(grace + 5)
    if process.is_alive():
        process.kill()
        process.join()


def _forward_signals(processes: list[BaseProcess]) -> None:
    def forward(signum: int, frame: object) -> None:
        for p in processes:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
