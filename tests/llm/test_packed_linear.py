"""packed_linear.cpp against torch: every row count of a step, odd sizes, and its checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blazerpc.llm import cpu, kernels
from blazerpc.llm.linear import PACKED_AVX2, PACKED_BF16, Linear, pack_blocks

native = kernels.native()
needs_packed = pytest.mark.skipif(
    native is None or not cpu.at_least("avx2"), reason="needs the native kernels and an x86 CPU with AVX2"
)
# The paths this CPU runs (as capped by BLAZE_CPU_ISA): AVX-512 BF16 where it has it, AVX2 on every x86 CPU here
PATHS = [pytest.param(PACKED_BF16, id="avx512_bf16")] * cpu.at_least("avx512_bf16") + [
    pytest.param(PACKED_AVX2, id="avx2")
] * cpu.at_least("avx2")


def reference(x: torch.Tensor, w: torch.Tensor, isa: int) -> torch.Tensor:
    """Products summed in float64; x rounded to bfloat16 first on the AVX-512 BF16 path, as it does."""
    rows = x.bfloat16() if isa == PACKED_BF16 else x
    return (rows.double() @ w.double().T).float()


@needs_packed
@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("rows", [*range(1, 14), 32, 97])  # every remainder of 5 and 6 rows, 16 passes and more
@pytest.mark.parametrize(("n", "k"), [(192, 576), (200, 37), (5, 2), (64, 1537), (72, 64)])  # partial blocks, odd K
def test_packed_linear_matches_torch(isa: int, rows: int, n: int, k: int) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(rows * n + k)
    x, w = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g).bfloat16()
    got = native.packed_linear(x, pack_blocks(w), n, isa)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(x, w, isa), atol=1e-4 * k**0.5, rtol=1e-4)
    strided = torch.randn(k, rows, generator=g).t()  # a transposed view is made contiguous first
    torch.testing.assert_close(native.packed_linear(strided, pack_blocks(w), n, isa), reference(strided, w, isa),
                               atol=1e-4 * k**0.5, rtol=1e-4)  # fmt: skip


def test_pack_blocks_layout() -> None:
    w = torch.arange(70 * 5, dtype=torch.float32).view(70, 5).bfloat16()  # exact in bfloat16
    blocks = pack_blocks(w)
    assert blocks.shape == (2, 3, 64) and blocks.dtype == torch.int32
    values = blocks.view(torch.bfloat16).view(2, 3, 64, 2)  # (block, pair, row, 2)
    assert values[0, 1, 7].tolist() == [w[7, 2].item(), w[7, 3].item()]
    assert values[1, 2, 5].tolist() == [w[69, 4].item(), 0.0]  # K padded to even with zeros
    assert values[1, 0, 6:].abs().sum() == 0  # rows 70..127: zero padding


@needs_packed
def test_packed_linear_refuses_what_it_cannot_do() -> None:
    assert native is not None
    blocks = pack_blocks(torch.randn(70, 16).bfloat16())
    with pytest.raises(RuntimeError, match="n = 200 does not fit 2 blocks of 64"):
        native.packed_linear(torch.randn(1, 16), blocks, 200, PACKED_AVX2)
    with pytest.raises(RuntimeError, match="x has 14 columns, W 16"):
        native.packed_linear(torch.randn(1, 14), blocks, 70, PACKED_AVX2)
    with pytest.raises(RuntimeError, match="float32"):
        native.packed_linear(torch.randn(1, 16).bfloat16(), blocks, 70, PACKED_AVX2)
    with pytest.raises(RuntimeError, match=r"isa must be 0 \(AVX-512 BF16\) or 1 \(AVX2\), got 2"):
        native.packed_linear(torch.randn(1, 16), blocks, 70, 2)
    assert native.packed_linear(torch.randn(0, 16), blocks, 70, PACKED_AVX2).shape == (0, 70)


@needs_packed
@pytest.mark.parametrize("rows", [1, 9, 200])
def test_linear_takes_the_packed_kernel_for_bfloat16_weights(rows: int) -> None:
    """On every x86 CPU with AVX2 but no AMX: the path of its class, and no oneDNN copy (whose
    bfloat16 reorder raises on CPUs without AVX-512). With AMX: oneDNN's copy alone."""
    linear = Linear(96, 130)
    torch.nn.init.normal_(linear.weight)
    linear.weight.data = linear.weight.data.bfloat16()
    linear.prepare_decode()
    x = torch.randn(rows, 96)
    if cpu.at_least("amx"):  # up to 4 rows the few-rows kernel, then oneDNN, which answers in bfloat16
        assert linear.packed is None and linear.weight_packed is not None and linear.few_rows is not None
        if rows <= linear.KERNEL_ROWS:
            torch.testing.assert_close(linear(x), F.linear(x, linear.weight.float()), atol=1e-3, rtol=1e-4)
            return
        expected = F.linear(x.bfloat16().float(), linear.weight.float())
        torch.testing.assert_close(linear(x), expected.bfloat16().float(), atol=1e-2, rtol=1e-2)
        return
    assert linear.packed is not None and linear.weight_packed is None and linear.few_rows is None
    assert linear.packed_isa == (PACKED_BF16 if cpu.at_least("avx512_bf16") else PACKED_AVX2)
    expected = F.linear(x.bfloat16().float() if linear.packed_isa == PACKED_BF16 else x, linear.weight.float())
    torch.testing.assert_close(linear(x), expected, atol=1e-3, rtol=1e-4)
