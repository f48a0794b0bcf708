"""Request and response schemas read from a function's type hints.

The result is plain data (``Field`` and the ``TypeSpec`` variants) that the protobuf
and HTTP layers both translate; neither reads type hints itself.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import pydantic

from .context import Context
from .tensor import TensorSpec

SCALARS: tuple[type, ...] = (str, int, float, bool, bytes)
SUPPORTED = "str, int, float, bool, bytes, list[T], T | None, TensorInput/TensorOutput, a dataclass or a pydantic model"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Scalar:
    py: type


@dataclass(frozen=True)
class ListOf:
    item: TypeSpec


@dataclass(frozen=True)
class Tensor:
    spec: TensorSpec


@dataclass(frozen=True)
class Struct:
    cls: type
    fields: tuple[Field, ...]

    @property
    def name(self) -> str:
        return self.cls.__name__


TypeSpec = Scalar | ListOf | Tensor | Struct


@dataclass(frozen=True)
class Field:
    name: str
    type: TypeSpec
    optional: bool = False  # declared ``T | None``
    default: Any = MISSING
    constraints: tuple[Any, ...] = ()  # ``Annotated`` metadata such as ``pydantic.Field(ge=1)``

    @property
    def required(self) -> bool:
        return self.default is MISSING and not self.optional

    def default_value(self) -> Any:
        return None if self.default is MISSING else self.default


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives: parameters, and the type of each result or chunk."""

    inputs: tuple[Field, ...]
    output: TypeSpec
    #: The parameter annotated ``Context``, if any: the server passes the call's context there.
    context: str | None = None


def read_signature(fn: Callable[..., Any], where: str, streaming: bool) -> Signature:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for a forward reference, TypeError for bad syntax
        raise TypeError(f"{where}: cannot read type hints: {exc}") from exc
    inputs = []
    context = None
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs are not supported (parameter {p.name!r})")
        if p.name not in hints:
            raise TypeError(f"{where}, parameter {p.name!r}: a type hint is required")
        if hints[p.name] is Context:
            if context is not None:
                raise TypeError(f"{where}: parameters {context!r} and {p.name!r} both ask for the Context; keep one")
            context = p.name
            continue
        default = MISSING if p.default is p.empty else p.default
        inputs.append(read_field(p.name, hints[p.name], default, f"{where}, parameter {p.name!r}"))
    if "return" not in hints:
        kind = "yielded chunk" if streaming else "result"
        raise TypeError(f"{where}: a return type hint is required (the type of each {kind})")
    out_hint = _yielded_type(hints["return"]) if streaming else hints["return"]
    output = read_type(out_hint, f"{where}, return type")
    return Signature(tuple(inputs), output, context)


def _yielded_type(hint: Any) -> Any:
    """``AsyncIterator[T]`` / ``Generator[T, ...]`` give T; a bare T (as in ``-> str``) is T."""
    origin = typing.get_origin(hint)
    iterators = (
        cabc.AsyncIterator,
        cabc.AsyncIterable,
        cabc.AsyncGenerator,
        cabc.Iterator,
        cabc.Iterable,
        cabc.Generator,
    )
    if origin in iterators and typing.get_args(hint):
        return typing.get_args(hint)[0]
    return hint


def read_field(name: str, hint: Any, default: Any, where: str) -> Field:
    optional = False
    constraints: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated and not _tensor_spec(hint):
        hint, *extra = typing.get_args(hint)
        constraints = tuple(extra)
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"{where}: unsupported union {hint!r}; only T | None is supported")
        hint, optional = args[0], True
    spec = read_type(hint, where)
    if optional and isinstance(spec, ListOf):
        raise TypeError(f"{where}: list[T] | None is not supported; use list[T] (empty when absent)")
    if isinstance(default, (list, dict, set)) and default:
        raise TypeError(f"{where}: a mutable default is shared between calls; use a tuple or None")
    return Field(name, spec, optional, default, constraints)


def _tensor_spec(hint: Any) -> TensorSpec | None:
    return next((m for m in typing.get_args(hint)[1:] if isinstance(m, TensorSpec)), None)


def read_type(hint: Any, where: str) -> TypeSpec:
    if typing.get_origin(hint) is typing.Annotated:
        tensor = _tensor_spec(hint)
        if tensor is not None:
            return Tensor(tensor)
        hint = typing.get_args(hint)[0]
    if hint in SCALARS:
        return Scalar(hint)
    origin = typing.get_origin(hint)
    if origin in (list, cabc.Sequence):
        (item,) = typing.get_args(hint) or (None,)
        if item is None:
            raise TypeError(f"{where}: a list needs an item type, as in list[int]")
        item_spec = read_type(item, where)
        if isinstance(item_spec, ListOf):
            raise TypeError(f"{where}: nested lists are not supported; use a tensor or a list of dataclasses")
        return ListOf(item_spec)
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, pydantic.BaseModel)):
        return Struct(hint, _struct_fields(hint, where))
    raise TypeError(f"{where}: unsupported type {_name(hint)}; supported: {SUPPORTED}")


def _struct_fields(cls: type, where: str) -> tuple[Field, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    where = f"{where}, {cls.__name__}"
    if issubclass(cls, pydantic.BaseModel):
        return tuple(
            read_field(
                name,
                hints.get(name, info.annotation),
                MISSING if info.is_required() else info.get_default(call_default_factory=True),
                f"{where}.{name}",
            )
            for name, info in cls.model_fields.items()
        )
    fields = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = f.default
        if default is dataclasses.MISSING:
            default = MISSING if f.default_factory is dataclasses.MISSING else f.default_factory()
        fields.append(read_field(f.name, hints[f.name], default, f"{where}.{f.name}"))
    return tuple(fields)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)
