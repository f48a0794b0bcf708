from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import pydantic
import pytest

from blazerpc import BlazeApp, TensorInput, TensorOutput
from blazerpc.schema import ListOf, Scalar, Struct, Tensor, read_signature


@dataclass
class Point:
    x: float
    y: float = 0.0


class Chunk(pydantic.BaseModel):
    token: str
    token_id: int


def test_read_signature_scalars_lists_optionals_defaults() -> None:
    def f(a: str, b: int = 3, c: list[float] | None = None, d: bytes | None = None) -> bool:
        return True

    with pytest.raises(TypeError, match=r"parameter 'c': list\[T\] \| None is not supported"):
        read_signature(f, "model 'f'", streaming=False)

    def g(a: str, b: int = 3, c: list[float] = [], d: bytes | None = None) -> bool:  # noqa: B006
        return True

    sig = read_signature(g, "model 'g'", streaming=False)
    a, b, c, d = sig.inputs
    assert a.type == Scalar(str) and a.required
    assert b.default == 3 and not b.required
    assert c.type == ListOf(Scalar(float))
    assert d.optional and d.default_value() is None
    assert sig.output == Scalar(bool)


def test_read_signature_tensors_and_structs() -> None:
    def f(x: TensorInput[np.float32, "batch", 4], p: Point) -> TensorOutput[np.int64, "batch"]:
        return np.zeros(1, np.int64)

    sig = read_signature(f, "m", streaming=False)
    x, p = sig.inputs
    assert isinstance(x.type, Tensor) and x.type.spec.dims == ("batch", 4) and x.type.spec.batched
    assert isinstance(p.type, Struct) and [f.name for f in p.type.fields] == ["x", "y"]
    assert isinstance(sig.output, Tensor) and sig.output.spec.dtype == np.int64


def test_streaming_return_hint_is_the_chunk_type() -> None:
    async def a(prompt: str) -> AsyncIterator[Chunk]:
        yield Chunk(token="x", token_id=1)

    def b(prompt: str) -> Iterator[str]:
        yield "x"

    async def c(prompt: str) -> str:  # the seed guide's spelling
        yield "x"

    a_out = read_signature(a, "a", streaming=True).output
    assert isinstance(a_out, Struct) and a_out.cls is Chunk
    assert read_signature(b, "b", streaming=True).output == Scalar(str)
    assert read_signature(c, "c", streaming=True).output == Scalar(str)


def test_decoration_errors_name_the_function_and_parameter() -> None:
    app = BlazeApp()

    with pytest.raises(TypeError, match=r"model 'm' \(function .*f'\), parameter 'x': unsupported type dict"):

        @app.model("m")
        def f(x: dict) -> str:  # type: ignore[type-arg]
            return ""

    with pytest.raises(TypeError, match=r"model 's' .*a return type hint is required"):

        @app.model("s", streaming=True)
        async def g(prompt: str):  # type: ignore[no-untyped-def]
            yield prompt

    with pytest.raises(TypeError, match=r"parameter 'y': a type hint is required"):

        @app.model("h")
        def h(y) -> str:  # type: ignore[no-untyped-def]
            return ""

    with pytest.raises(TypeError, match="streaming=True needs a generator"):

        @app.model("k", streaming=True)
        def k(y: str) -> str:
            return y

    with pytest.raises(TypeError, match="nested lists are not supported"):

        @app.model("n")
        def n(y: list[list[int]]) -> str:
            return ""


def test_registry_rejects_duplicate_and_clashing_names() -> None:
    app = BlazeApp()

    @app.model("iris-classifier")
    def a(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="already registered"):
        app.model("iris-classifier")(a)
    with pytest.raises(ValueError, match="same RPC name PredictIrisClassifier"):
        app.model("iris_classifier")(a)
    with pytest.raises(ValueError, match="must start with a letter"):
        app.model("9lives")(a)
