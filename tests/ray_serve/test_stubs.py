"""The gRPC stubs Ray's proxy imports: protoc's output for the ``.proto`` that ``blaze proto`` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from blazerpc.protobuf.descriptors import build_file
from blazerpc.protobuf.render import render_proto
from blazerpc.ray_serve.stubs import generate_stubs
from examples.echo import app as echo
from examples.replicas import app


def test_one_package_per_distinct_proto(tmp_path: Path) -> None:
    first, again = generate_stubs(app.registry, tmp_path), generate_stubs(app.registry, tmp_path)
    other = generate_stubs(echo.registry, tmp_path)
    assert first == again
    assert other.package != first.package
    assert (first.path / "inference.proto").read_text() == render_proto(build_file(app.registry))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.package, other.package])  # no build left


def test_the_stubs_import_and_name_the_servicer_function(tmp_path: Path) -> None:
    stubs = generate_stubs(app.registry, tmp_path)
    module, _, function = stubs.servicer_function.rpartition(".")
    code = (
        f"import {module} as grpc_stubs, {stubs.messages_module} as messages;"
        f"print(callable(grpc_stubs.{function}), messages.WhoamiResponse(pid=7).pid,"
        " messages.DESCRIPTOR.package)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "7", "blazerpc"]
