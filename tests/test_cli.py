"""The ``blaze`` command, run as a user would: a real process on real ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from blazerpc import BlazeClient
from tests.conftest import ROOT, blaze, free_port, wait_http_ready


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "blazerpc.cli", "--help"], capture_output=True, text=True, check=True)
    assert "serve" in out.stdout and "proto" in out.stdout
    serve = subprocess.run(
        [sys.executable, "-m", "blazerpc.cli", "serve", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--port", "--http-port", "--workers", "--reload", "--grace-period", "--no-grpc", "--no-http"):
        assert option in serve.stdout
    llm = subprocess.run(
        [sys.executable, "-m", "blazerpc.cli", "llm", "--help"],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    for option in ("--max-body-mb", "--startup-timeout", "--max-engine-restarts", "--engine-restart-window"):
        assert option in llm.stdout
    for option in ("--api-key", "--protect-docs", "--no-access-log"):
        assert option in llm.stdout and option in serve.stdout


def test_serve_takes_api_keys_and_logs_a_line_per_call(process_cleanup: list) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = blaze("serve", "tests.apps:app", "--host", "127.0.0.1", "--port", str(grpc_port),
                 "--http-port", str(http_port), "--api-key", "k1", "--api-key", "k2")  # fmt: skip
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    url = f"http://127.0.0.1:{http_port}/echo"
    assert httpx.post(url, json={"text": "hi"}, headers={"x-request-id": "no-key"}).status_code == 401
    ok = httpx.post(url, json={"text": "hi"}, headers={"Authorization": "Bearer k2", "x-request-id": "with-key"})
    assert ok.json() == {"result": "hi"}

    async def call() -> str:
        async with BlazeClient("127.0.0.1", grpc_port, api_key="k1") as client:
            return str(await client.predict("echo", text="grpc"))

    assert asyncio.run(call()) == "grpc"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert "middleware: metrics (/metrics), AccessLog, API keys (2, docs open)" in out
    assert re.search(r"INFO blazerpc\.access \[no-key\] http POST /echo 401 \d+\.\dms", out), out
    assert re.search(r"INFO blazerpc\.access \[with-key\] http POST /echo 200 \d+\.\dms", out), out
    assert re.search(r"INFO blazerpc\.access \[[0-9a-f]{16}\] grpc /blazerpc.InferenceService/PredictEcho OK", out)


def test_no_access_log_and_keys_from_the_environment(process_cleanup: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLAZE_API_KEYS", "env-key")
    http_port = free_port()
    proc = blaze("serve", "tests.apps:app", "--host", "127.0.0.1", "--no-grpc", "--http-port", str(http_port),
                 "--no-access-log")  # fmt: skip
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    url = f"http://127.0.0.1:{http_port}/echo"
    assert httpx.post(url, json={"text": "hi"}).status_code == 401
    assert httpx.post(url, json={"text": "hi"}, headers={"Authorization": "Bearer env-key"}).status_code == 200
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert "blazerpc.access" not in out and "API keys (1, docs open)" in out


def test_a_bad_key_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blazerpc.cli", "serve", "tests.apps:app", "--api-key", "has space"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "no spaces or commas" in done.stderr


def test_serve_answers_both_transports_and_stops_cleanly_on_sigterm(process_cleanup: list) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = blaze(
        "serve", "tests.apps:app", "--host", "127.0.0.1", "--port", str(grpc_port), "--http-port", str(http_port)
    )
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    assert httpx.post(f"http://127.0.0.1:{http_port}/echo", json={"text": "hi"}).json() == {"result": "hi"}

    async def call() -> str:
        async with BlazeClient("127.0.0.1", grpc_port) as client:
            return str(await client.predict("echo", text="grpc"))

    assert asyncio.run(call()) == "grpc"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "model echo (version 1, unary)" in out  # the startup banner
    assert "received SIGTERM, shutting down" in out and "stopped" in out


def test_workers_run_separate_processes_on_one_port(process_cleanup: list) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = blaze(
        "serve",
        "tests.apps:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--workers",
        "2",
    )
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    pids = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        with httpx.Client() as fresh:  # a new connection each time, so the kernel spreads them
            pids.add(fresh.post(f"http://127.0.0.1:{http_port}/whoami", json={}).json()["result"])
    assert len(pids) == 2 and proc.pid not in pids
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_reload_restarts_when_a_source_file_changes(tmp_path: Path, process_cleanup: list) -> None:
    source = textwrap.dedent(
        """
        from blazerpc import BlazeApp

        app = BlazeApp()

        @app.model("version")
        def version() -> str:
            return "{}"
        """
    )
    (tmp_path / "reloadable.py").write_text(source.format("one"))
    http_port = free_port()
    proc = blaze(
        "serve",
        "reloadable:app",
        "--host",
        "127.0.0.1",
        "--no-grpc",
        "--http-port",
        str(http_port),
        "--reload",
        cwd=tmp_path,
    )
    process_cleanup.append(proc)
    wait_http_ready(http_port)
    url = f"http://127.0.0.1:{http_port}/version"
    assert httpx.post(url, json={}).json() == {"result": "one"}
    time.sleep(0.05)
    (tmp_path / "reloadable.py").write_text(source.format("two"))
    deadline = time.monotonic() + 30
    result = None
    while time.monotonic() < deadline and result != "two":
        try:
            reply = httpx.post(url, json={}, timeout=1)
            if reply.status_code == 200:  # 503 while the old process drains
                result = reply.json()["result"]
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    assert result == "two"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


def test_proto_rejects_a_bad_app_reference() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "blazerpc.cli", "proto", "tests.apps"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode != 0
    assert "must look like 'module:attribute'" in out.stderr
