"""docs/production.md as written: its example is examples/tenants.py, and its commands, client and
access-log lines are what `blaze serve examples.tenants:app --api-key demo-key` does."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys

import httpx

from tests.conftest import ROOT, blaze, free_port, wait_http_ready
from tests.doc_commands import code_blocks, run_doc_command

DOC = (ROOT / "docs" / "production.md").read_text()


def blocks(language: str) -> list[str]:
    return code_blocks(DOC, language)


def test_the_middleware_example_is_the_example_app() -> None:
    assert blocks("python")[0] in (ROOT / "examples" / "tenants.py").read_text()


def test_production_docs_commands_run(process_cleanup: list) -> None:
    serve_block, calls_block = blocks("bash")
    assert serve_block.strip() == "blaze serve examples.tenants:app --api-key demo-key"
    grpc_port, http_port = free_port(), free_port()
    argv = [*shlex.split(serve_block)[1:], "--port", str(grpc_port), "--http-port", str(http_port)]
    server = blaze(*argv)
    process_cleanup.append(server)
    wait_http_ready(http_port)

    def run(command: str) -> str:
        return run_doc_command(command, grpc_port, http_port)

    keyed, anonymous, grpcurl = (run(line) for line in calls_block.strip().splitlines())
    head, _, body = keyed.partition("\n\n")
    assert body == '{"text":"hi","tenant":"acme","request_id":"req-1"}'
    assert "x-request-id: req-1" in head and "x-calls-left: 99" in head
    assert anonymous.startswith("HTTP/1.1 401") and "www-authenticate: Bearer" in anonymous
    response_headers = grpcurl.split("Response headers received:")[1].split("Response contents:")[0]
    trailers = grpcurl.split("Response trailers received:")[1]
    assert re.search(r"x-request-id: [0-9a-f]{16}", response_headers)
    assert re.search(r"x-calls-left: 9[89]", trailers)  # 99 if a new minute began in between
    assert '"tenant": "acme"' in grpcurl

    client = blocks("python")[1].replace("50051", str(grpc_port))
    done = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi anonymous\n"

    long_text = {"text": "word " * 500, "stream": True}  # 5 s of words
    with httpx.stream("POST", f"http://127.0.0.1:{http_port}/words", json=long_text,
                      headers={"Authorization": "Bearer demo-key"}) as events:  # fmt: skip
        next(events.iter_lines())  # then leave mid-stream: the log says CANCELLED
    server.send_signal(signal.SIGINT)
    out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
    for sample in blocks("text")[0].strip().splitlines():
        assert re.search(_shape(sample), out), (sample, out)


def _shape(sample: str) -> str:
    """The documented line as a pattern: any time, request id, latency and message count."""
    _, _, rest = sample.partition(" INFO ")
    pattern = re.escape("INFO " + rest)
    pattern = re.sub(r"\\\[[^\]]*\\\]", r"\\[[^]]+\\]", pattern, count=1)
    pattern = re.sub(r"\d+\\\.\d+ms", r"\\d+\\.\\dms", pattern)
    return re.sub(r"\d+\\ msgs", r"\\d+ msgs", pattern)
