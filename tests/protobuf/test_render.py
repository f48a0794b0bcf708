from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
from google.protobuf import descriptor_pb2

from blazerpc import BlazeApp, TensorInput, TensorOutput
from blazerpc.protobuf.descriptors import FILE_NAME, build_file
from blazerpc.protobuf.render import render_proto


@dataclass
class Box:
    label: str
    corners: list[float]


class Token(pydantic.BaseModel):
    text: str
    logprob: float | None = None


def make_app() -> BlazeApp:
    app = BlazeApp("render")

    @app.model("detect")
    def detect(image: TensorInput[np.uint8, "h", "w", 3], threshold: float = 0.5) -> list[Box]:
        return []

    @app.model("embed")
    def embed(texts: list[str], normalize: bool = True, raw: bytes | None = None) -> TensorOutput[np.float32, 8]:
        return np.zeros(8, np.float32)

    @app.model("chat", streaming=True)
    async def chat(prompt: str, max_tokens: int = 16) -> AsyncIterator[Token]:
        yield Token(text=prompt)

    return app


def protoc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", *args, FILE_NAME],
        capture_output=True,
        text=True,
        check=False,
    )


def normalized(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what protoc adds (json_name) or omits (an explicit ``server_streaming: false``)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(fd)
    for msg in copy.message_type:
        for field in msg.field:
            field.ClearField("json_name")
    for service in copy.service:
        for method in service.method:
            if not method.server_streaming:
                method.ClearField("server_streaming")
    return copy


def test_render_proto_names_the_service_methods_streams_and_optionals() -> None:
    text = render_proto(build_file(make_app().registry))
    assert 'syntax = "proto3";' in text and "package blazerpc;" in text
    assert "service InferenceService {" in text
    assert "  rpc PredictDetect(DetectRequest) returns (DetectResponse);" in text
    assert "  rpc PredictEmbed(EmbedRequest) returns (EmbedResponse);" in text
    assert "  rpc PredictChat(ChatRequest) returns (stream ChatResponse);" in text
    assert "  TensorProto image = 1;" in text
    assert "  optional double threshold = 2;" in text
    assert "  repeated Box result = 1;" in text
    assert "  repeated string texts = 1;" in text
    assert "  optional bool normalize = 2;" in text
    assert "  optional bytes raw = 3;" in text
    assert "  string prompt = 1;" in text and "  optional int64 max_tokens = 2;" in text
    assert "  optional double logprob = 2;" in text


def test_rendered_proto_compiles_with_protoc_to_the_same_descriptor(tmp_path: Path) -> None:
    fd = build_file(make_app().registry)
    (tmp_path / FILE_NAME).parent.mkdir(parents=True)
    (tmp_path / FILE_NAME).write_text(render_proto(fd))
    out = tmp_path / "out"
    out.mkdir()
    descriptor_set = tmp_path / "set.pb"
    result = protoc(tmp_path, f"--python_out={out}", f"--descriptor_set_out={descriptor_set}")
    assert result.returncode == 0, result.stderr
    assert (out / "blazerpc" / "inference_pb2.py").is_file()

    (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    assert normalized(compiled) == normalized(fd)


def test_rendered_proto_of_an_empty_app_compiles(tmp_path: Path) -> None:
    text = render_proto(build_file(BlazeApp().registry))
    assert "service InferenceService {\n}" in text
    (tmp_path / FILE_NAME).parent.mkdir(parents=True)
    (tmp_path / FILE_NAME).write_text(text)
    result = protoc(tmp_path, f"--descriptor_set_out={tmp_path / 'set.pb'}")
    assert result.returncode == 0, result.stderr
