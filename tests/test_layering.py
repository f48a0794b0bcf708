"""Dependencies point one way: the engine package knows no web framework and no transport, and
the ``blaze llm`` server process never loads torch (its engine process does)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, blaze, free_port, wait_http_ready
from tests.llm_app.test_service import engine_pid

ENGINE = ROOT / "src" / "blazerpc" / "llm"
TRANSPORTS = {"fastapi", "starlette", "grpclib", "grpc", "uvicorn", "anyio", "httpx", "pydantic"}
ENGINE_MAY_IMPORT = {"errors"}  # of blazerpc's own modules outside llm/: the status-carrying error only


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(level, module)`` of every import in a file: level 0 is absolute, 1 is ``.x``, 2 is ``..x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_the_engine_package_imports_no_transport_and_nothing_above_it() -> None:
    problems = []
    for path in sorted(ENGINE.glob("*.py")):
        for level, module in imports_of(path):
            top = module.split(".")[0]
            if level == 0 and (top in TRANSPORTS or (top == "blazerpc" and not module.startswith("blazerpc.llm"))):
                problems.append(f"{path.name}: import {module}")
            if level == 2 and top not in ENGINE_MAY_IMPORT:
                problems.append(f"{path.name}: from ..{module}")
    assert not problems, problems


def test_importing_the_engine_loads_no_web_framework() -> None:
    code = (
        "import sys, blazerpc.llm.engine, blazerpc.llm.engine_process, blazerpc.llm.client;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(TRANSPORTS)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_server_side_of_the_engine_imports_without_torch() -> None:
    code = (
        "import sys, blazerpc.llm_app.service, blazerpc.llm.client, blazerpc.llm.protocol, blazerpc.cli;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_blaze_llm_server_process_has_not_loaded_torch(tiny_dir: Path, process_cleanup: list) -> None:
    port = free_port()
    proc = blaze("llm", "--model", str(tiny_dir), "--host", "127.0.0.1", "--port", str(port),
                 "--no-grpc", "--max-model-len", "512", "--kv-cache-mb", "16")  # fmt: skip
    process_cleanup.append(proc)
    wait_http_ready(port, timeout=120)
    body = {"prompt": "hi", "max_tokens": 2, "ignore_eos": True}
    assert httpx.post(f"http://127.0.0.1:{port}/generate", json=body, timeout=60).status_code == 200
    engine = engine_pid(proc.pid)
    assert engine is not None
    assert "libtorch" in Path(f"/proc/{engine}/maps").read_text()  # the check can see torch where it is
    assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
