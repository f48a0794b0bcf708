from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pydantic
import pytest

from blazerpc import BlazeApp, BlazeError, Status, TensorInput, TensorOutput
from blazerpc.protobuf.codec import array_to_tensor, encode, request_decoder, tensor_to_array, to_python
from blazerpc.protobuf.descriptors import Schema


@dataclass
class Point:
    x: float
    y: float = 0.0


class Label(pydantic.BaseModel):
    text: str
    score: float = 1.0


def make_app() -> BlazeApp:
    app = BlazeApp("codec")

    @app.model("mix")
    def mix(
        text: str, values: list[int], n: int = 3, label: str | None = None, flag: bool = False, raw: bytes = b""
    ) -> str:
        return text

    @app.model("shapes")
    def shapes(p: Point, labels: list[Label], tag: Label | None = None) -> Point:
        return p

    @app.model("scale")
    def scale(x: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 4]:
        return x

    @app.model("bounded")
    def bounded(k: Annotated[int, pydantic.Field(ge=1)] = 1) -> int:
        return k

    return app


APP = make_app()
SCHEMA = Schema.of(APP.registry)


def wire(name: str, values: Any) -> Any:
    """Encode a request, send it through real protobuf bytes and parse it back."""
    msg = encode(SCHEMA.descriptor(name), values)
    return SCHEMA.message_class(name).FromString(msg.SerializeToString())


def decode(model: str, msg: Any) -> dict[str, Any]:
    return request_decoder(APP.registry[model].signature.inputs)(msg)


def test_encode_scalars_lists_and_optionals_round_trip_through_bytes() -> None:
    values = {"text": "hi", "values": [1, 2, 3], "n": 0, "label": "x", "flag": True, "raw": b"\x00\x01"}
    msg = wire("MixRequest", values)
    assert to_python(msg) == values  # n=0 is present, not confused with "absent"
    assert decode("mix", msg) == values


def test_absent_optionals_are_none_and_decode_to_defaults() -> None:
    msg = wire("MixRequest", {"text": "hi"})
    assert to_python(msg) == {"text": "hi", "values": [], "n": None, "label": None, "flag": None, "raw": None}
    assert decode("mix", msg) == {"text": "hi", "values": [], "n": 3, "label": None, "flag": False, "raw": b""}


def test_encode_wrong_scalar_type_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(BlazeError, match=r"^n: cannot encode str as int64") as err:
        encode(SCHEMA.descriptor("MixRequest"), {"text": "hi", "n": "three"})
    assert err.value.status == Status.INVALID_ARGUMENT


def test_structs_encode_from_dataclass_and_pydantic_objects_and_decode_to_them() -> None:
    request = {"p": Point(1.5, -2.0), "labels": [Label(text="a"), Label(text="b", score=0.5)]}
    msg = wire("ShapesRequest", request)
    assert to_python(msg)["p"] == {"x": 1.5, "y": -2.0}
    assert decode("shapes", msg) == {**request, "tag": None}
    reply = SCHEMA.message_class("ShapesResponse").FromString(
        encode(SCHEMA.descriptor("ShapesResponse"), Point(3.0)).SerializeToString()
    )
    assert to_python(reply) == {"x": 3.0, "y": 0.0}


def test_missing_required_struct_is_invalid_argument() -> None:
    with pytest.raises(BlazeError, match=r"^p: field required$") as err:
        decode("shapes", wire("ShapesRequest", {}))
    assert err.value.status == Status.INVALID_ARGUMENT


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.bool_])
def test_tensor_dtype_and_shape_round_trip(dtype: type) -> None:
    array = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    cls = SCHEMA.message_class("TensorProto")
    back = tensor_to_array(cls.FromString(array_to_tensor(cls, array).SerializeToString()), "t")
    assert back.dtype == array.dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_big_endian_and_strided_arrays_are_sent_as_little_endian_contiguous() -> None:
    cls = SCHEMA.message_class("TensorProto")
    array = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    msg = array_to_tensor(cls, array)
    assert msg.dtype == "float32" and list(msg.shape) == [3, 2]
    np.testing.assert_array_equal(tensor_to_array(msg, "t"), array)


def test_request_tensor_is_decoded_and_checked_against_its_spec() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    kwargs = decode("scale", wire("ScaleRequest", {"x": x}))
    np.testing.assert_array_equal(kwargs["x"], x)
    assert kwargs["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 4), np.float64), "x: expected dtype float32, got float64"),
        (np.zeros((2, 3), np.float32), "x: dim 1 must be 4"),
        (np.zeros(4, np.float32), "x: expected 2 dims"),
    ],
)
def test_tensor_of_wrong_dtype_or_shape_is_invalid_argument(array: Any, message: str) -> None:
    with pytest.raises(BlazeError) as err:
        decode("scale", wire("ScaleRequest", {"x": array}))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert err.value.message.startswith(message)


def test_malformed_tensor_message_is_invalid_argument() -> None:
    cls = SCHEMA.message_class("TensorProto")
    with pytest.raises(BlazeError, match=r"^t: shape \[2, 2\] of float32 needs 16 bytes, got 4$"):
        tensor_to_array(cls(shape=[2, 2], dtype="float32", data=b"\x00" * 4), "t")
    with pytest.raises(BlazeError, match=r"^t: unknown dtype 'float99'$"):
        tensor_to_array(cls(shape=[1], dtype="float99", data=b"\x00"), "t")
    with pytest.raises(BlazeError, match=r"^t: negative dim"):
        tensor_to_array(cls(shape=[-1], dtype="uint8", data=b""), "t")


@pytest.mark.parametrize(
    ("dtype", "message"),
    [
        ("object", "t: dtype 'object' is not a numeric dtype"),
        ("O", "t: dtype 'O' is not a numeric dtype"),
        ("(2,)f4", "t: dtype '(2,)f4' is not a numeric dtype"),
        ("U4", "t: dtype 'U4' is not a numeric dtype"),
        ("(99999999999999999999,)f4", "t: unknown dtype '(99999999999999999999,)f4'"),
    ],
)
def test_non_numeric_dtype_is_invalid_argument(dtype: str, message: str) -> None:
    cls = SCHEMA.message_class("TensorProto")
    with pytest.raises(BlazeError) as err:
        tensor_to_array(cls(shape=[1], dtype=dtype, data=b"\x00" * 8), "t")
    assert err.value.status == Status.INVALID_ARGUMENT
    assert err.value.message == message


def test_huge_shape_is_invalid_argument_not_an_int64_overflow() -> None:
    cls = SCHEMA.message_class("TensorProto")
    with pytest.raises(BlazeError) as err:  # 2**32 * 2**32 wrapped to 0 in int64 and "matched" no data
        tensor_to_array(cls(shape=[2**32, 2**32], dtype="float32", data=b""), "t")
    assert err.value.message == "t: shape [4294967296, 4294967296] of float32 needs 73786976294838206464 bytes, got 0"
    with pytest.raises(BlazeError, match=r"^t: unusable shape \[0, 9223372036854775807\]"):
        tensor_to_array(cls(shape=[0, 2**63 - 1], dtype="float32", data=b""), "t")


def test_big_endian_tensor_is_accepted_in_native_order() -> None:
    x = np.arange(8, dtype=">f4").reshape(2, 4)
    tensor = SCHEMA.message_class("TensorProto")(shape=[2, 4], dtype=">f4", data=x.tobytes())
    kwargs = decode("scale", SCHEMA.message_class("ScaleRequest")(x=tensor))
    assert kwargs["x"].dtype == np.float32 and kwargs["x"].dtype.isnative
    np.testing.assert_array_equal(kwargs["x"], x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_tensor_is_invalid_argument(bad: float) -> None:
    x = np.ones((1, 4), np.float32)
    x[0, 2] = bad
    with pytest.raises(BlazeError) as err:
        decode("scale", wire("ScaleRequest", {"x": x}))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert err.value.message == "x: values must be finite float32 numbers"


def test_missing_required_tensor_is_invalid_argument() -> None:
    with pytest.raises(BlazeError, match=r"^x: field required$"):
        decode("scale", wire("ScaleRequest", {}))


def test_annotated_constraints_are_applied_on_decode() -> None:
    assert decode("bounded", wire("BoundedRequest", {})) == {"k": 1}
    assert decode("bounded", wire("BoundedRequest", {"k": 5})) == {"k": 5}
    with pytest.raises(BlazeError, match=r"^k: Input should be greater than or equal to 1") as err:
        decode("bounded", wire("BoundedRequest", {"k": 0}))
    assert err.value.status == Status.INVALID_ARGUMENT
