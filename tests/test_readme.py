"""The README's tour, run as written (ports swapped for free ones, grpcurl by its full path)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, blaze, free_port, wait_http_ready
from tests.doc_commands import code_blocks, run_doc_command

README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return code_blocks(README, language)


def test_readme_starts_with_the_two_make_commands() -> None:
    first = blocks("bash")[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make serve", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_llm_commands_are_the_seed_commands() -> None:
    from tests.llm_app.test_generate import seed_commands

    llm_block = blocks("bash")[5]
    curls = [line for line in llm_block.splitlines() if line.startswith("curl")]
    assert curls == seed_commands()  # and tests/llm_app/test_generate.py runs those against blaze llm
    assert "blaze llm --demo" in blocks("bash")[4] and "blaze llm --port 5000" in blocks("bash")[4]


def test_readme_tour_runs(tmp_path: Path, process_cleanup: list) -> None:
    app_code, client_code = blocks("python")[:2]
    (tmp_path / "app.py").write_text(app_code)
    serve_block, curl_block, grpcurl_block = blocks("bash")[1:4]
    assert serve_block.strip() == "blaze serve app:app"
    grpc_port, http_port = free_port(), free_port()
    server = blaze("serve", "app:app", "--port", str(grpc_port), "--http-port", str(http_port), cwd=tmp_path)
    process_cleanup.append(server)
    wait_http_ready(http_port)

    def run(command: str) -> str:
        return run_doc_command(command, grpc_port, http_port)

    outputs = [run(line) for line in curl_block.strip().splitlines()]
    assert outputs[0] == '{"result":"hihi"}'
    assert outputs[1].startswith('data: {"token": "Tell ", "token_id": 0}\n\n')
    assert outputs[1].endswith("data: [DONE]\n\n")
    assert outputs[2] == '{"status":"ok"}'
    assert '"/generate"' in outputs[3]
    outputs = [run(line) for line in grpcurl_block.strip().splitlines()]
    assert "blazerpc.InferenceService" in outputs[0]
    assert "rpc PredictGenerate" in outputs[1]
    assert '"token": "gRPC "' in outputs[2]
    assert '"status": "SERVING"' in outputs[3]

    client = client_code.replace("50051", str(grpc_port))
    done = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hihi\nTell me about gRPC "
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=30)
    assert server.returncode == 0


def test_readme_production_example_runs(tmp_path: Path, process_cleanup: list) -> None:
    (tmp_path / "shop.py").write_text(blocks("python")[2])
    serve_block, calls_block = blocks("bash")[6:8]
    argv = shlex.split(serve_block)
    assert argv[:3] == ["blaze", "serve", "shop:app"]
    grpc_port, http_port = free_port(), free_port()
    server = blaze(*argv[1:], "--port", str(grpc_port), "--http-port", str(http_port), cwd=tmp_path)
    process_cleanup.append(server)
    wait_http_ready(http_port)
    http_call, grpc_call, scrape = (run_doc_command(line, grpc_port, http_port) for line in calls_block.splitlines())
    assert http_call == '{"result":"acme over http"}'
    assert '"result": "acme over grpc"' in grpc_call
    assert 'blazerpc_requests_total{code="OK",model="whoami",transport="grpc"} 1.0' in scrape
    url = f"http://127.0.0.1:{http_port}/whoami"
    refused = httpx.post(url, json={}, headers={"Authorization": "Bearer secret-key"})
    assert refused.status_code == 422 and "x-tenant" in refused.text
    assert httpx.post(url, json={}).status_code == 401
