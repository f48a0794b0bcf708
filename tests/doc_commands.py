"""Running the commands of README.md and docs/ as written: code blocks, ports swapped for free ones."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.grpc.test_interop import GRPCURL


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run_doc_command(command: str, grpc_port: int, http_port: int) -> str:
    """Run one documented curl or grpcurl line against a server on the given ports; its stdout."""
    command = command.replace(":8000", f":{http_port}").replace(":50051", f":{grpc_port}")
    argv = shlex.split(command)
    if argv[0] == "grpcurl":
        argv[0] = GRPCURL
    argv = [a.replace(" 50051", f" {grpc_port}") for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout
