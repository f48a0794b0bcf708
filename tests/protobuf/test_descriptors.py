from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, make_dataclass

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from blazerpc import BlazeApp, TensorInput, TensorOutput
from blazerpc.protobuf.descriptors import SERVICE_FULL_NAME, Schema, build_file, method_path

FDP = descriptor_pb2.FieldDescriptorProto


@dataclass
class Point:
    x: float
    y: float = 0.0


OtherPoint = make_dataclass("Point", [("z", int)])  # a different type with the same name


def make_app() -> BlazeApp:
    app = BlazeApp("descriptors")

    @app.model("iris-classifier")
    def classify(
        x: TensorInput[np.float32, "batch", 4], tags: list[str], p: Point, top_k: int = 1
    ) -> TensorOutput[np.int64, "batch"]:
        return np.zeros(len(x), np.int64)

    @app.model("tokens", streaming=True)
    async def tokens(prompt: str) -> AsyncIterator[str]:
        yield prompt

    @app.model("points", streaming=True)
    def points(n: int) -> Iterator[Point]:
        yield Point(float(n))

    return app


def fields(fd: descriptor_pb2.FileDescriptorProto, message: str) -> dict[str, FDP]:
    (msg,) = [m for m in fd.message_type if m.name == message]
    return {f.name: f for f in msg.field}


def test_build_file_has_one_predict_method_per_model_with_streaming_flags() -> None:
    app = make_app()
    fd = build_file(app.registry)
    assert (fd.package, fd.syntax) == ("blazerpc", "proto3")
    (service,) = fd.service
    assert service.name == "InferenceService"
    methods = {m.name: m for m in service.method}
    assert list(methods) == ["PredictIrisClassifier", "PredictTokens", "PredictPoints"]
    assert methods["PredictIrisClassifier"].input_type == ".blazerpc.IrisClassifierRequest"
    assert methods["PredictIrisClassifier"].output_type == ".blazerpc.IrisClassifierResponse"
    assert not methods["PredictIrisClassifier"].server_streaming
    assert methods["PredictTokens"].server_streaming and methods["PredictPoints"].server_streaming
    assert not any(m.client_streaming for m in methods.values())
    assert method_path(app.registry["tokens"]) == "/blazerpc.InferenceService/PredictTokens"


def test_request_fields_have_numbers_types_labels_and_presence() -> None:
    fd = build_file(make_app().registry)
    request = fields(fd, "IrisClassifierRequest")
    assert [(f.name, f.number) for f in request.values()] == [("x", 1), ("tags", 2), ("p", 3), ("top_k", 4)]
    assert request["x"].type_name == ".blazerpc.TensorProto"
    assert (request["tags"].type, request["tags"].label) == (FDP.TYPE_STRING, FDP.LABEL_REPEATED)
    assert request["p"].type_name == ".blazerpc.Point"
    assert request["top_k"].type == FDP.TYPE_INT64 and request["top_k"].proto3_optional
    assert not request["tags"].proto3_optional
    assert fields(fd, "TensorProto").keys() == {"shape", "dtype", "data"}
    assert fields(fd, "Point")["y"].proto3_optional and not fields(fd, "Point")["x"].proto3_optional


def test_response_wraps_non_struct_results_and_is_the_struct_itself() -> None:
    fd = build_file(make_app().registry)
    assert fields(fd, "IrisClassifierResponse")["result"].type_name == ".blazerpc.TensorProto"
    assert fields(fd, "TokensResponse")["result"].type == FDP.TYPE_STRING
    assert fields(fd, "PointsResponse").keys() == {"x", "y"}
    assert [m.name for m in fd.message_type].count("TensorProto") == 1
    assert [m.name for m in fd.message_type].count("Point") == 1


def test_schema_gives_message_classes_and_the_service() -> None:
    schema = Schema.of(make_app().registry)
    service = schema.file_descriptor.services_by_name["InferenceService"]
    assert service.full_name == SERVICE_FULL_NAME
    assert service.methods_by_name["PredictTokens"].output_type.full_name == "blazerpc.TokensResponse"
    request = schema.message_class("IrisClassifierRequest")(tags=["a"], top_k=2)
    assert request.DESCRIPTOR.full_name == "blazerpc.IrisClassifierRequest"
    assert request.HasField("top_k") and not request.HasField("x")


def test_two_different_apps_in_one_process_do_not_clash() -> None:
    first = BlazeApp("first")
    second = BlazeApp("second")

    @first.model("alpha")
    def alpha(a: str) -> str:
        return a

    @second.model("beta")
    def beta(b: int) -> int:
        return b

    a, b = Schema.of(first.registry), Schema.of(second.registry)
    assert a.pool is not b.pool
    assert a.message_class("AlphaRequest")(a="x").a == "x"
    assert b.message_class("BetaRequest")(b=2).b == 2
    with pytest.raises(KeyError):
        b.descriptor("AlphaRequest")
    private = [s for s in (a, b) if s.pool is not descriptor_pool.Default()]
    assert private  # the default pool holds at most one of them
    for schema in private:  # seeded so reflection can still describe health
        assert schema.pool.FindServiceByName("grpc.health.v1.Health")
    assert Schema.of(first.registry).message_class("AlphaRequest")(a="y").a == "y"  # rebuilding is fine


def test_two_struct_types_with_one_name_are_rejected() -> None:
    app = BlazeApp()

    @app.model("a")
    def a(p: Point) -> str:
        return ""

    @app.model("b")
    def b(p: OtherPoint) -> str:
        return ""

    with pytest.raises(TypeError, match="two different types are named 'Point'"):
        build_file(app.registry)
