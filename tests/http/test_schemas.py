"""JSON tensors: nested lists become the declared dtype exactly, or a 422 that names the bad value."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from blazerpc.http.schemas import _tensor_validator
from blazerpc.tensor import TensorSpec
from tests.apps import make_app
from tests.conftest import serving


def to_array(dtype: Any, value: Any, dims: tuple[int | str, ...] = (2,)) -> Any:
    return _tensor_validator(TensorSpec(np.dtype(dtype), dims))(value)


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (np.float32, [1, None], "tensor values must be numbers, got null"),
        (np.float32, [1, "2"], "tensor values must be numbers, got a string"),
        (np.float32, [1, {}], "tensor values must be numbers, got an object"),
        (np.int64, [1, 99999999999999999999], "integer 99999999999999999999 is out of range for int64"),
        (np.int64, [1, 2**63], "integer 9223372036854775808 is out of range for int64"),
        (np.uint64, [-1, 2], "integer -1 is out of range for uint64"),
        (np.int8, [300, 1], "integer 300 is out of range for int8"),
        (np.int64, [1, 1.5], "expected int64 values, got 1.5"),
        (np.float32, [1e39, 1], "tensor: values must be finite float32 numbers"),
        (np.float32, [float("nan"), 1], "tensor: values must be finite float32 numbers"),
        (np.float32, [[1, 2], [3]], "ragged nested lists; every row must have the same length"),
    ],
)
def test_bad_tensor_values_are_named(dtype: Any, value: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        to_array(dtype, value)
    assert str(err.value) == message


def test_numbers_become_the_declared_dtype_exactly() -> None:
    assert to_array(np.uint64, [1, 2**63]).tolist() == [1, 2**63]  # int64 and uint64 mixed, no float64 detour
    assert to_array(np.int64, [True, 2**63 - 1]).tolist() == [1, 2**63 - 1]
    floats = to_array(np.float32, [[1, 2.5]], ("batch", 2))
    assert floats.dtype == np.float32 and floats.tolist() == [[1.0, 2.5]]


async def test_hostile_tensor_bodies_get_422_with_the_reason() -> None:
    async with (
        serving(make_app(), grpc_port=None) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        bodies = {
            b'{"x": [[1, 2, null, 4]]}': "tensor values must be numbers, got null",
            b'{"x": [[1, 2, 3, 99999999999999999999]]}': "integer 99999999999999999999 is out of range for int64",
            b'{"x": [[1, 2, 3, 1e39]]}': "values must be finite float32 numbers",
        }
        for body, message in bodies.items():
            reply = await http.post("/scale", content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 422, body
            assert reply.json()["detail"][0]["loc"] == ["body", "x"]
            assert message in reply.json()["detail"][0]["msg"], body
        for literal in (b"NaN", b"-Infinity"):  # not JSON; if the body parser lets them through, the tensor check won't
            reply = await http.post(
                "/scale", content=b'{"x": [[1, 2, 3, %s]]}' % literal, headers={"content-type": "application/json"}
            )
            assert reply.status_code == 422
            assert "values must be finite float32 numbers" in reply.text or "is not a JSON number" in reply.text
        assert (await http.post("/scale", json={"x": [[1, 2, 3, 4]]})).status_code == 200
