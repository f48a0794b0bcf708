"""Pydantic request/response models and JSON converters, from the same schema as protobuf."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import pydantic
from pydantic import AfterValidator, BaseModel, WithJsonSchema, create_model

from ..errors import InvalidArgument
from ..schema import MISSING, ListOf, Scalar, Struct, Tensor, TypeSpec
from ..schema import Field as SpecField
from ..tensor import TensorSpec

ToJson = Callable[[Any], Any]


class TensorJson(BaseModel):
    """A tensor in JSON: nested lists plus dtype and shape."""

    data: list[Any]
    dtype: str
    shape: list[int]


class ErrorDetail(BaseModel):
    status: str
    code: int
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def request_model(name: str, fields: tuple[SpecField, ...], extra: dict[str, Any] | None = None) -> type[BaseModel]:
    """A pydantic model whose validated ``kwargs()`` are the model function's arguments."""
    definitions: dict[str, Any] = {f.name: _definition(f) for f in fields}
    definitions.update(extra or {})
    return create_model(name, __config__=pydantic.ConfigDict(extra="forbid"), **definitions)


def _definition(f: SpecField) -> tuple[Any, Any]:
    annotation = _annotation(f.type)
    if f.constraints:
        annotation = Annotated[annotation, *f.constraints]
    if f.optional:
        annotation = annotation | None
    if f.default is not MISSING:
        return annotation, f.default
    return annotation, (None if f.optional else ...)


def _annotation(spec: TypeSpec) -> Any:
    if isinstance(spec, Scalar):
        return spec.py
    if isinstance(spec, ListOf):
        return list[_annotation(spec.item)]  # type: ignore[misc]
    if isinstance(spec, Tensor):
        description = f"{spec.spec.dtype.name} tensor {spec.spec.describe()} as nested lists"
        return Annotated[
            list[Any],
            AfterValidator(_tensor_validator(spec.spec)),
            WithJsonSchema(tensor_json_schema(spec.spec, description)),
        ]
    struct_model = request_model(spec.name, spec.fields)
    cls = spec.cls
    return Annotated[struct_model, AfterValidator(lambda m: cls(**_values(m)))]


def tensor_json_schema(spec: TensorSpec, description: str) -> dict[str, Any]:
    """Nested arrays, one per dim, of the dtype's JSON type; a fixed dim fixes its array's length."""
    kind = spec.dtype.kind
    schema: dict[str, Any] = {"type": "boolean" if kind == "b" else "integer" if kind in "iu" else "number"}
    if kind == "f":
        schema |= {"minimum": float(np.finfo(spec.dtype).min), "maximum": float(np.finfo(spec.dtype).max)}
    elif kind in "iu":
        schema |= {"minimum": int(np.iinfo(spec.dtype).min), "maximum": int(np.iinfo(spec.dtype).max)}
    for dim in reversed(spec.dims):
        schema = {"type": "array", "items": schema}
        schema |= {"minItems": dim, "maxItems": dim} if isinstance(dim, int) else {"minItems": 1}
    return schema | {"description": description}


def _values(model: BaseModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in type(model).model_fields}


def _tensor_validator(spec: TensorSpec) -> Callable[[list[Any]], Any]:
    def to_array(value: list[Any]) -> Any:
        try:
            array: npt.NDArray[Any] | None = np.asarray(value)
        except (ValueError, OverflowError):  # ragged, or an int numpy cannot hold
            array = None
        if array is None or array.dtype.kind not in "biuf" or _lossy(array, spec.dtype):
            # The walk runs only when the fast path failed: it names the value that is wrong.
            problem = _bad_leaf(value, spec.dtype)
            if problem:
                raise ValueError(problem)
            if array is None or array.dtype.kind not in "biuf":
                raise ValueError("ragged nested lists; every row must have the same length")
            array = np.array(value, dtype=spec.dtype)  # ints that all fit, e.g. int64 and uint64 mixed
        if array.size and not np.can_cast(array.dtype, spec.dtype, "same_kind"):
            raise ValueError(f"expected {spec.dtype.name} values, got {array.dtype.name}")
        with np.errstate(over="ignore", invalid="ignore"):  # 1e39 -> inf in float32: TensorSpec.check refuses it
            array = array.astype(spec.dtype, copy=False)
        try:
            spec.check(array, "tensor")
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None
        return array

    return to_array


def _lossy(array: npt.NDArray[Any], dtype: np.dtype[Any]) -> bool:
    """True when casting these JSON numbers to ``dtype`` would change an integer."""
    if dtype.kind not in "iu" or not array.size:
        return False
    if array.dtype.kind == "f":  # floats, or ints numpy promoted to float64 (int64 mixed with uint64)
        return True
    info = np.iinfo(dtype)
    return bool(array.min() < info.min or array.max() > info.max)


def _bad_leaf(value: list[Any], dtype: np.dtype[Any]) -> str | None:
    """What is wrong with a value of these nested lists that ``dtype`` cannot hold, if any."""
    ints = np.iinfo(dtype) if dtype.kind in "iu" else np.iinfo(np.int64)
    stack = [value]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, bool):
                continue
            elif isinstance(item, int):
                if not ints.min <= item <= ints.max:
                    return f"integer {item} is out of range for {ints.dtype.name}"
            elif isinstance(item, float):
                if dtype.kind in "iu":
                    return f"expected {dtype.name} values, got {item!r}"
            else:
                return f"tensor values must be numbers, got {_json_type(item)}"
    return None


def _json_type(item: Any) -> str:
    names = {type(None): "null", str: "a string", dict: "an object"}
    return names.get(type(item), type(item).__name__)


def response_model(name: str, output: TypeSpec) -> type[BaseModel]:
    """The documented shape of a result: a struct's fields, or ``{"result": value}``."""
    fields: dict[str, Any]
    if isinstance(output, Struct):
        fields = {f.name: (_out_annotation(f.type, f.optional), ...) for f in output.fields}
    else:
        fields = {"result": (_out_annotation(output, False), ...)}
    model: type[BaseModel] = create_model(name, **fields)
    return model


def _out_annotation(spec: TypeSpec, optional: bool) -> Any:
    if isinstance(spec, Scalar):
        annotation: Any = str if spec.py is bytes else spec.py
    elif isinstance(spec, ListOf):
        annotation = list[_out_annotation(spec.item, False)]  # type: ignore[misc]
    elif isinstance(spec, Tensor):
        annotation = TensorJson
    else:
        annotation = response_model(spec.name, spec)
    return annotation | None if optional else annotation


def json_converter(spec: TypeSpec) -> ToJson | None:
    """A function making a model's value JSON-ready; ``None`` when it already is."""
    if isinstance(spec, Scalar):
        return (lambda v: base64.b64encode(v).decode()) if spec.py is bytes else None
    if isinstance(spec, ListOf):
        item = json_converter(spec.item)
        return (lambda v: [item(x) for x in v]) if item else list
    if isinstance(spec, Tensor):
        return _tensor_json
    fields = [(f.name, json_converter(f.type), f.optional) for f in spec.fields]

    def struct(value: Any) -> dict[str, Any]:
        get = value.get if isinstance(value, Mapping) else lambda n: getattr(value, n)
        out = {}
        for name, convert, optional in fields:
            v = get(name)
            if v is None and optional:
                continue  # an optional field that is None is left out, as protobuf leaves it unset
            out[name] = convert(v) if convert and v is not None else v
        return out

    return struct


def _tensor_json(value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    return {"data": array.tolist(), "dtype": array.dtype.name, "shape": list(array.shape)}


def result_json(output: TypeSpec) -> ToJson:
    """A model result as the JSON body: a struct as an object, anything else as ``{"result": ...}``."""
    convert = json_converter(output)
    if isinstance(output, Struct):
        assert convert is not None
        return convert
    if convert is None:
        return lambda v: {"result": v}
    return lambda v: {"result": convert(v)}
