"""Python values <-> protobuf messages.

``encode`` and ``to_python`` follow a message's descriptor, so the client can use them on
a schema learned through reflection. ``request_decoder`` follows the model's own schema,
so the server can apply defaults and check tensors against their declared dtype and dims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ..errors import InvalidArgument
from ..schema import Field, ListOf, Scalar, Struct, Tensor, TypeSpec
from .descriptors import PACKAGE, TENSOR

TENSOR_FULL_NAME = f"{PACKAGE}.{TENSOR}"
Converter = Callable[[Any], Any]


def array_to_tensor(cls: type[Message], value: Any) -> Message:
    array = np.asarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return cls(shape=array.shape, dtype=array.dtype.name, data=np.ascontiguousarray(array).tobytes())


def tensor_to_array(msg: Any, name: str) -> npt.NDArray[Any]:
    """A TensorProto as a native-byte-order array, or InvalidArgument saying what is wrong with it."""
    dtype = _numeric_dtype(msg.dtype, name)
    shape = tuple(msg.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{name}: negative dim in shape {list(shape)}")
    # Python ints: numpy's int64 product wraps, and [2**32, 2**32] would "need" 0 bytes.
    expected = math.prod(shape) * dtype.itemsize
    if len(msg.data) != expected:
        raise InvalidArgument(
            f"{name}: shape {list(shape)} of {dtype.name} needs {expected} bytes, got {len(msg.data)}"
        )
    try:
        array = np.frombuffer(bytearray(msg.data), dtype=dtype).reshape(shape)
    except ValueError as exc:  # a zero-size shape numpy cannot hold: a dim past 2**63 bytes, over 64 dims
        raise InvalidArgument(f"{name}: unusable shape {list(shape)} ({exc})") from None
    # A peer may send ">f4"; the model sees float32 in this machine's order, as it declared.
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _numeric_dtype(text: str, name: str) -> np.dtype[Any]:
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: unknown dtype {text!r}") from None
    # bool, ints, floats, complex; not object (no buffer), strings, dates, records or subarrays
    if dtype.kind not in "biufc":
        raise InvalidArgument(f"{name}: dtype {text!r} is not a numeric dtype")
    return dtype


class _Encoder:
    """Builds one message type from a mapping or an object with attributes."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.cls = message_factory.GetMessageClass(descriptor)
        self.fields: list[tuple[str, Converter | None]] = [(f.name, _field_converter(f)) for f in descriptor.fields]

    def __call__(self, values: Any) -> Message:
        mapping = isinstance(values, Mapping)
        kwargs = {}
        for name, convert in self.fields:
            value = values.get(name) if mapping else getattr(values, name, None)
            if value is not None:
                kwargs[name] = convert(value) if convert else value
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise self._explain(kwargs) from exc

    def _explain(self, kwargs: dict[str, Any]) -> InvalidArgument:
        for name, value in kwargs.items():
            try:
                self.cls(**{name: value})
            except (TypeError, ValueError) as exc:
                field = self.cls.DESCRIPTOR.fields_by_name[name]
                return InvalidArgument(f"{name}: cannot encode {type(value).__name__} as {_type_label(field)} ({exc})")
        return InvalidArgument(f"cannot encode {self.cls.DESCRIPTOR.name}")


def _field_converter(field: FieldDescriptor) -> Converter | None:
    if field.message_type is None:
        return None
    if field.message_type.full_name == TENSOR_FULL_NAME:
        cls = message_factory.GetMessageClass(field.message_type)
        one: Converter = lambda v: array_to_tensor(cls, v)  # noqa: E731
    else:
        one = encoder(field.message_type)
    if _is_repeated(field):
        return lambda values: [one(v) for v in values]
    return one


@cache
def encoder(descriptor: Descriptor) -> _Encoder:
    return _Encoder(descriptor)


def encode(descriptor: Descriptor, values: Any) -> Message:
    """A message of this type from a mapping or object; numpy arrays become TensorProto."""
    return encoder(descriptor)(values)


def to_python(msg: Message) -> dict[str, Any]:
    """A message as a dict; TensorProto becomes a numpy array; absent optionals are None."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if _is_repeated(field):
            out[field.name] = [_value(field, v) for v in value] if field.message_type else list(value)
        elif field.has_presence and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: Any, value: Any) -> Any:
    if field.message_type is None:
        return value
    if field.message_type.full_name == TENSOR_FULL_NAME:
        return tensor_to_array(value, field.name)
    return to_python(value)


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _type_label(field: Any) -> str:
    if field.message_type is not None:
        return str(field.message_type.name)
    names = {v: k for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}
    return names.get(field.type, "?").removeprefix("TYPE_").lower()


def request_decoder(fields: tuple[Field, ...]) -> Callable[[Any], dict[str, Any]]:
    """A function from a request message to the model's keyword arguments."""
    steps = [(f, _decoder(f.type, f.name), _has_presence(f)) for f in fields]
    checks = {f.name: _constraint_check(f) for f in fields if f.constraints}

    def decode(msg: Any) -> dict[str, Any]:
        kwargs = {}
        for f, convert, presence in steps:
            if presence and not msg.HasField(f.name):
                if f.required:
                    raise InvalidArgument(f"{f.name}: field required")
                kwargs[f.name] = f.default_value()
                continue
            value = getattr(msg, f.name)
            kwargs[f.name] = convert(value) if convert else value
        for name, check in checks.items():
            if kwargs[name] is not None:
                kwargs[name] = check(kwargs[name])
        return kwargs

    return decode


def _constraint_check(f: Field) -> Converter:
    """Apply ``Annotated`` constraints (``pydantic.Field(ge=1)``, validators) as HTTP does."""
    import pydantic

    base = f.type.py if isinstance(f.type, Scalar) else Any
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Annotated[base, *f.constraints])

    def check(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidArgument(f"{f.name}: {exc.errors()[0]['msg']}") from None

    return check


def _has_presence(f: Field) -> bool:
    if isinstance(f.type, ListOf):
        return False
    return isinstance(f.type, (Tensor, Struct)) or not f.required


def _decoder(spec: TypeSpec, path: str) -> Converter | None:
    if isinstance(spec, Scalar):
        return None
    if isinstance(spec, ListOf):
        item = _decoder(spec.item, f"{path}[]")
        return (lambda v: [item(x) for x in v]) if item else list
    if isinstance(spec, Tensor):
        tensor_spec = spec.spec

        def tensor(v: Any) -> npt.NDArray[Any]:
            array = tensor_to_array(v, path)
            tensor_spec.check(array, path)
            return array

        return tensor
    decode_fields = request_decoder(spec.fields)
    cls = spec.cls
    return lambda v: cls(**decode_fields(v))
