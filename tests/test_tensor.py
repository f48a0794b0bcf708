"""TensorSpec checks, and that both transports refuse the same hostile tensors with INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from blazerpc import BlazeError, Status, TensorInput
from blazerpc.protobuf.descriptors import Schema
from blazerpc.tensor import TensorSpec
from tests.apps import make_app
from tests.conftest import serving

SPEC = TensorSpec(np.dtype(np.float32), ("batch", 4))


def test_spec_from_annotation_has_dtype_and_dims() -> None:
    spec = TensorInput[np.float32, "batch", 4].__metadata__[0]
    assert spec == SPEC and spec.batched


def test_check_accepts_finite_values_and_refuses_nan_and_inf() -> None:
    SPEC.check(np.ones((2, 4), np.float32), "x")
    for bad in (np.nan, np.inf, -np.inf):
        array = np.ones((2, 4), np.float32)
        array[1, 3] = bad
        with pytest.raises(BlazeError, match=r"^x: values must be finite float32 numbers$") as err:
            SPEC.check(array, "x")
        assert err.value.status == Status.INVALID_ARGUMENT


def test_check_names_dtype_rank_and_dim() -> None:
    with pytest.raises(BlazeError, match=r"^x: expected dtype float32, got float64$"):
        SPEC.check(np.ones((2, 4)), "x")
    with pytest.raises(BlazeError, match=r"^x: expected 2 dims \[batch, 4\], got shape \[4\]$"):
        SPEC.check(np.ones(4, np.float32), "x")
    with pytest.raises(BlazeError, match=r"^x: dim 1 must be 4 \[batch, 4\], got shape \[2, 3\]$"):
        SPEC.check(np.ones((2, 3), np.float32), "x")


async def test_hostile_tensors_are_invalid_argument_over_grpc() -> None:
    app = make_app()
    schema = Schema.of(app.registry)
    request, tensor = schema.message_class("ScaleRequest"), schema.message_class("TensorProto")
    async with (
        serving(app, http_port=None) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):
        scale = channel.unary_unary(
            "/blazerpc.InferenceService/PredictScale",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=schema.message_class("ScaleResponse").FromString,
        )
        hostile = {
            "object": tensor(shape=[1, 4], dtype="object", data=b"\0" * 32),
            "(2,)f4": tensor(shape=[1, 4], dtype="(2,)f4", data=b"\0" * 32),
            "[2**32, 2**32]": tensor(shape=[2**32, 2**32], dtype="float32", data=b""),
            "nan": tensor(shape=[1, 4], dtype="float32", data=np.full(4, np.nan, np.float32).tobytes()),
        }
        for case, x in hostile.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await scale(request(x=x))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        big_endian = np.arange(4, dtype=">f4").reshape(1, 4)
        reply = await scale(request(x=tensor(shape=[1, 4], dtype=">f4", data=big_endian.tobytes()), factor=1.0))
        assert np.frombuffer(reply.result.data, np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
