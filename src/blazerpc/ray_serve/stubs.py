"""The Python gRPC stubs Ray Serve's gRPC proxy needs, generated from an app's ``.proto`` with protoc.

Ray's proxy (grpcio) registers services through protoc's ``add_<Service>Servicer_to_server``
functions, imported by name in every proxy process, and pickles each request message to the
replica, which imports the message's class to read it. So the stubs are a package of their own,
named after a hash of the ``.proto`` (two apps never share one), shipped to the cluster with
``runtime_env={"py_modules": [stubs.path]}``. The ``.proto`` is the one ``blaze proto`` writes,
so protoc-made clients and ``BlazeClient`` see the same service as with ``blaze serve``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..protobuf.descriptors import SERVICE, build_file
from ..protobuf.render import render_proto
from ..registry import Registry

#: Where generated stub packages live unless told otherwise (one directory per ``.proto``).
STUBS_ROOT = Path(tempfile.gettempdir()) / "blazerpc-ray-stubs"
PROTO_MODULE = "inference"
#: Adds the standard ``grpc.health.v1.Health`` service to Ray's proxy; replicas answer ``Check``.
HEALTH_SERVICER = "blazerpc.ray_serve.grpc_health.add_health_servicer_to_server"


@dataclass(frozen=True)
class GrpcStubs:
    """One generated stub package: ``path`` is its directory, ``package`` its import name."""

    package: str
    path: Path

    @property
    def messages_module(self) -> str:
        return f"{self.package}.{PROTO_MODULE}_pb2"

    @property
    def servicer_function(self) -> str:
        """The import path Ray's ``gRPCOptions(grpc_servicer_functions=[...])`` takes."""
        return f"{self.package}.{PROTO_MODULE}_pb2_grpc.add_{SERVICE}Servicer_to_server"


def generate_stubs(registry: Registry, root: Path = STUBS_ROOT) -> GrpcStubs:
    """Write (once per distinct ``.proto``) the stub package of ``registry``'s service."""
    text = render_proto(build_file(registry))
    package = "blazerpc_stubs_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    path = root / package
    if not (path / f"{PROTO_MODULE}_pb2_grpc.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
        try:
            _protoc(work, package, text)
            try:
                os.rename(work / package, path)  # atomic: a concurrent deploy sees all of it or none
            except OSError:
                if not (path / f"{PROTO_MODULE}_pb2_grpc.py").exists():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return GrpcStubs(package, path)


def _protoc(work: Path, package: str, proto_text: str) -> None:
    try:
        from grpc_tools import protoc
    except ImportError:
        raise RuntimeError("generating gRPC stubs needs grpcio-tools: pip install 'blazerpc[ray]'") from None
    source = work / package
    source.mkdir()
    (source / "__init__.py").write_text("")
    (source / f"{PROTO_MODULE}.proto").write_text(proto_text)
    args = [
        "protoc",
        f"-I{work}",
        f"--python_out={work}",
        f"--grpc_python_out={work}",
        f"{package}/{PROTO_MODULE}.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on the generated {package}/{PROTO_MODULE}.proto")
