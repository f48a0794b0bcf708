"""packed_linear.cpp against torch: every row count of a step, odd sizes, and its checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blazerpc.llm import kernels
from blazerpc.llm.linear import Linear, pack_blocks

native = kernels.native()
needs_bf16 = pytest.mark.skipif(
    native is None or not torch.cpu._is_avx512_bf16_supported(),
    reason="needs the native kernels and a CPU with AVX512-BF16",
)


def reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x rounded to bfloat16 (as the kernel does), products summed in float64."""
    return (x.bfloat16().double() @ w.double().T).float()


@needs_bf16
@pytest.mark.parametrize("rows", [*range(1, 14), 32, 97])  # every remainder of 6 rows, 16 passes and more
@pytest.mark.parametrize(("n", "k"), [(192, 576), (200, 37), (5, 2), (64, 1537)])  # partial blocks, odd K
def test_packed_linear_matches_torch(rows: int, n: int, k: int) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(rows * n + k)
    x, w = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g).bfloat16()
    got = native.packed_linear(x, pack_blocks(w), n)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(x, w), atol=1e-4 * k**0.5, rtol=1e-4)
    strided = torch.randn(k, rows, generator=g).t()  # a transposed view is made contiguous first
    torch.testing.assert_close(native.packed_linear(strided, pack_blocks(w), n), reference(strided, w),
                               atol=1e-4 * k**0.5, rtol=1e-4)  # fmt: skip


def test_pack_blocks_layout() -> None:
    w = torch.arange(70 * 5, dtype=torch.float32).view(70, 5).bfloat16()  # exact in bfloat16
    blocks = pack_blocks(w)
    assert blocks.shape == (2, 3, 64) and blocks.dtype == torch.int32
    values = blocks.view(torch.bfloat16).view(2, 3, 64, 2)  # (block, pair, row, 2)
    assert values[0, 1, 7].tolist() == [w[7, 2].item(), w[7, 3].item()]
    assert values[1, 2, 5].tolist() == [w[69, 4].item(), 0.0]  # K padded to even with zeros
    assert values[1, 0, 6:].abs().sum() == 0  # rows 70..127: zero padding


@needs_bf16
def test_packed_linear_refuses_what_it_cannot_do() -> None:
    assert native is not None
    blocks = pack_blocks(torch.randn(70, 16).bfloat16())
    with pytest.raises(RuntimeError, match="n = 200 does not fit 2 blocks of 64"):
        native.packed_linear(torch.randn(1, 16), blocks, 200)
    with pytest.raises(RuntimeError, match="x has 14 columns, W 16"):
        native.packed_linear(torch.randn(1, 14), blocks, 70)
    with pytest.raises(RuntimeError, match="float32"):
        native.packed_linear(torch.randn(1, 16).bfloat16(), blocks, 70)
    assert native.packed_linear(torch.randn(0, 16), blocks, 70).shape == (0, 70)


@needs_bf16
@pytest.mark.parametrize("rows", [1, 9, 200])
def test_linear_takes_the_packed_kernel_for_bfloat16_weights(rows: int) -> None:
    linear = Linear(96, 130)
    torch.nn.init.normal_(linear.weight)
    linear.weight.data = linear.weight.data.bfloat16()
    linear.prepare_decode()
    assert linear.packed is not None and linear.weight_packed is None  # no second packed copy
    x = torch.randn(rows, 96)
    torch.testing.assert_close(linear(x), F.linear(x.bfloat16().float(), linear.weight.float()), atol=1e-3, rtol=1e-4)
