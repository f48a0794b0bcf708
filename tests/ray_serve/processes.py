"""Running ``blaze ray ...`` as the docs say, and checking that it leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def blaze_ray(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``blaze`` with ``argv``, in the repository root, its output (Ray's included) in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "blazerpc.cli", *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Ray's GCS, raylet, workers, replicas), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGINT, as Ctrl-C; the exit code."""
    process.send_signal(signal.SIGINT)
    return process.wait(timeout)


def wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
    """Those of ``pids`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


def stop_all(process: subprocess.Popen[bytes]) -> None:
    """After a failed test: SIGINT as Ctrl-C, SIGKILL if that hangs, then whatever of Ray it left
    behind, so that the next tests do not share the two cores with a dying cluster."""
    if process.poll() is not None:
        return
    below = descendants(process.pid)
    try:
        stop(process)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
    for pid in wait_gone(below, timeout=10):
        os.kill(pid, signal.SIGKILL)
