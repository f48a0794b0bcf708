"""Registry -> ``FileDescriptorProto`` -> message classes, registered in a descriptor pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message

from ..registry import ModelInfo, Registry
from ..schema import Field, ListOf, Scalar, Struct, Tensor, TypeSpec

log = logging.getLogger(__name__)

PACKAGE = "blazerpc"
SERVICE = "InferenceService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"
FILE_NAME = "blazerpc/inference.proto"
TENSOR = "TensorProto"

FDP = descriptor_pb2.FieldDescriptorProto
SCALAR_TYPES: dict[type, int] = {
    str: FDP.TYPE_STRING,
    int: FDP.TYPE_INT64,
    float: FDP.TYPE_DOUBLE,
    bool: FDP.TYPE_BOOL,
    bytes: FDP.TYPE_BYTES,
}


def request_name(model: ModelInfo) -> str:
    return f"{model.camel}Request"


def response_name(model: ModelInfo) -> str:
    return f"{model.camel}Response"


def method_name(model: ModelInfo) -> str:
    return f"Predict{model.camel}"


def method_path(model: ModelInfo) -> str:
    return f"/{SERVICE_FULL_NAME}/{method_name(model)}"


def output_fields(model: ModelInfo) -> tuple[Field, ...]:
    """A struct result is the response itself; anything else is wrapped in ``result``."""
    out = model.signature.output
    return out.fields if isinstance(out, Struct) else (Field("result", out),)


def build_file(registry: Registry) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    builder = _Builder(fd)
    service = fd.service.add(name=SERVICE)
    for model in registry:
        builder.message(request_name(model), model.signature.inputs)
        builder.message(response_name(model), output_fields(model))
        service.method.add(
            name=method_name(model),
            input_type=f".{PACKAGE}.{request_name(model)}",
            output_type=f".{PACKAGE}.{response_name(model)}",
            server_streaming=model.streaming,
        )
    return fd


class _Builder:
    def __init__(self, fd: descriptor_pb2.FileDescriptorProto) -> None:
        self.fd = fd
        self.structs: dict[str, type] = {}

    def message(self, name: str, fields: tuple[Field, ...]) -> None:
        msg = self.fd.message_type.add(name=name)
        optional = []
        for number, f in enumerate(fields, start=1):
            proto_field = msg.field.add(name=f.name, number=number, label=FDP.LABEL_OPTIONAL)
            spec: TypeSpec = f.type
            if isinstance(spec, ListOf):
                proto_field.label = FDP.LABEL_REPEATED
                spec = spec.item
            self._set_type(proto_field, spec)
            # Scalars with a default or None need presence, so "absent" can mean "use the default".
            if isinstance(spec, Scalar) and proto_field.label != FDP.LABEL_REPEATED and not f.required:
                optional.append(proto_field)
        for proto_field in optional:  # proto3 `optional`: one synthetic oneof each, after real ones
            proto_field.proto3_optional = True
            proto_field.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=f"_{proto_field.name}")

    def _set_type(self, proto_field: Any, spec: TypeSpec) -> None:
        if isinstance(spec, Scalar):
            proto_field.type = SCALAR_TYPES[spec.py]
        elif isinstance(spec, Tensor):
            proto_field.type = FDP.TYPE_MESSAGE
            proto_field.type_name = f".{PACKAGE}.{TENSOR}"
            self._tensor()
        elif isinstance(spec, Struct):
            proto_field.type = FDP.TYPE_MESSAGE
            proto_field.type_name = f".{PACKAGE}.{spec.name}"
            self._struct(spec)
        else:
            raise TypeError(f"unexpected spec {spec!r}")

    def _tensor(self) -> None:
        if TENSOR in self.structs:
            return
        self.structs[TENSOR] = type(None)
        msg = self.fd.message_type.add(name=TENSOR)
        msg.field.add(name="shape", number=1, type=FDP.TYPE_INT64, label=FDP.LABEL_REPEATED)
        msg.field.add(name="dtype", number=2, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
        msg.field.add(name="data", number=3, type=FDP.TYPE_BYTES, label=FDP.LABEL_OPTIONAL)

    def _struct(self, spec: Struct) -> None:
        seen = self.structs.get(spec.name)
        if seen is spec.cls:
            return
        if seen is not None or (
            spec.name.endswith(("Request", "Response")) and spec.name in {m.name for m in self.fd.message_type}
        ):
            raise TypeError(f"two different types are named {spec.name!r}; message names must be unique")
        self.structs[spec.name] = spec.cls
        self.message(spec.name, spec.fields)


@dataclass(frozen=True)
class Schema:
    """The registry's protobuf file, its pool and a message class per message name."""

    file: descriptor_pb2.FileDescriptorProto
    pool: descriptor_pool.DescriptorPool

    @classmethod
    def of(cls, registry: Registry) -> Schema:
        fd = build_file(registry)
        return cls(fd, _register(fd))

    @property
    def file_descriptor(self) -> FileDescriptor:
        return self.pool.FindFileByName(self.file.name)

    def descriptor(self, name: str) -> Descriptor:
        return self.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")

    def message_class(self, name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor(name))


def _register(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pool.DescriptorPool:
    """Add to the default pool (where reflection looks); fall back to a private pool.

    The default pool holds one ``blazerpc/inference.proto``. A second, different app in
    the same process (as in tests) gets a private pool seeded with the health and
    reflection files, so reflection can still describe every service it serves.
    """
    default = descriptor_pool.Default()
    try:
        default.AddSerializedFile(fd.SerializeToString())
        return default
    except TypeError:
        log.debug("default descriptor pool already holds another %s; using a private pool", fd.name)
    pool = descriptor_pool.DescriptorPool()
    for dep in _service_files():
        pool.Add(dep)
    pool.Add(fd)
    return pool


def _service_files() -> list[descriptor_pb2.FileDescriptorProto]:
    from grpclib.health.v1 import health_pb2
    from grpclib.reflection.v1 import reflection_pb2
    from grpclib.reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

    files = []
    for module in (health_pb2, reflection_pb2, reflection_v1alpha_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return files
