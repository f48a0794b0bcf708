"""Quantized weights (quant.py) and their kernels (quant.cpp) against torch references: every
format, every instruction-set path this CPU has, odd sizes, 1..64 rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from blazerpc.llm import cpu, kernels, quant
from blazerpc.llm.linear import Linear

native = kernels.native()
needs_native = pytest.mark.skipif(native is None, reason="the native kernels could not be built here (no compiler?)")
RUNNABLE = [0] + [1] * cpu.at_least("avx2") + [2] * cpu.at_least("avx512")  # as BLAZE_CPU_ISA caps them
PATHS = [pytest.param(isa, id=quant.ISAS[isa]) for isa in RUNNABLE]


def reference(x: torch.Tensor, q: quant.QuantizedWeight) -> torch.Tensor:
    """What the kernels compute, in float64 torch ops: x quantized per group of 32 to two int8
    parts (step max|x| / 127 / 256, rounded half to even), times the dequantized weights."""
    k = q.in_features
    padded = F.pad(x, (0, q.u.shape[1] * quant.GROUP - k)).view(x.shape[0], -1, quant.GROUP)
    amax = padded.abs().amax(-1, keepdim=True)
    t = padded * torch.where(amax > 0, 127.0 / torch.where(amax > 0, amax, 1), 0)  # float32, as the kernel
    hi = torch.round(t)
    lo = torch.round((t - hi) * 256).clamp(-127, 127)
    xq = (256 * hi + lo).double() * (amax.double() / 127 / 256)
    return xq.reshape(x.shape[0], -1)[:, :k] @ quant.dequantize(q).double().T


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("n", "k"), [(96, 576), (37, 40), (5, 1537), (13, 64), (1, 31), (16, 32)])
def test_dequantize_is_within_half_a_step_of_the_weights(bits: int, n: int, k: int) -> None:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n * k))
    q = quant.quantize(w, bits)
    groups, tiles = -(-k // quant.GROUP), -(-n // quant.TILE)
    step = q.scale.permute(0, 2, 1).reshape(-1, groups)[:n].float()  # one quantization step per row and group
    error = (quant.dequantize(q) - w).abs()
    half_step = (step / 2).repeat_interleave(quant.GROUP, dim=1)[:, :k]
    assert bool((error <= half_step * 1.01 + 1e-3 * w.abs().amax()).all())
    assert q.u.dtype == torch.uint8 and q.u.shape == (tiles, groups, 16 * 32 * bits // 8)


@pytest.mark.parametrize(("bits", "ggml"), [(8, GGMLQuantizationType.Q8_0), (4, GGMLQuantizationType.Q4_1)])
def test_gguf_blocks_come_back_exactly(bits: int, ggml: GGMLQuantizationType) -> None:
    """A GGUF file's Q8_0 / Q4_1 tensor, dequantized at load and quantized again, is the same tensor."""
    w = np.random.default_rng(0).standard_normal((64, 576)).astype(np.float32)
    from_file = torch.from_numpy(gguf_dequantize(gguf_quantize(w, ggml), ggml).reshape(64, 576))
    assert torch.equal(quant.dequantize(quant.quantize(from_file, bits)), from_file)


@needs_native
@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 13, 64])
@pytest.mark.parametrize(("n", "k"), [(96, 576), (37, 40), (5, 1537), (6, 1536), (33, 33)])
def test_quant_linear_matches_the_reference(isa: int, bits: int, rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + n)
    w, x = torch.randn(n, k, generator=g), torch.randn(rows, k, generator=g)
    x[0, :7] *= 50  # an outlier: its group gets a coarser activation scale
    q = quant.quantize(w, bits)
    out = quant.quantized_linear(x, q, isa)
    torch.testing.assert_close(out.double(), reference(x, q), atol=2e-4 * k**0.5, rtol=1e-4)
    exact = x.double() @ quant.dequantize(q).double().T  # what rounding x to ~16 bits costs: little
    assert (out.double() - exact).abs().max() < 1e-3 * exact.abs().max()


@needs_native
@pytest.mark.parametrize("isa", PATHS)
def test_quant_linear_of_zeros_and_a_strided_x(isa: int) -> None:
    q = quant.quantize(torch.zeros(8, 128), 4)
    assert torch.equal(quant.quantized_linear(torch.randn(3, 128), q, isa), torch.zeros(3, 8))
    q = quant.quantize(torch.randn(8, 128), 8)
    x = torch.randn(128, 3).t()  # a transposed view is made contiguous first
    torch.testing.assert_close(quant.quantized_linear(x, q, isa), quant.quantized_linear(x.contiguous(), q, isa))
    assert torch.equal(quant.quantized_linear(torch.zeros(2, 128), q, isa), torch.zeros(2, 8))


@needs_native
def test_quant_linear_refuses_what_it_cannot_do() -> None:
    assert native is not None
    q = quant.quantize(torch.randn(8, 128), 4)
    with pytest.raises(RuntimeError, match="at most 64 rows, got 65"):
        native.quant_linear(torch.randn(65, 128), q.u, q.scale, q.min, 8, 4, 0)
    with pytest.raises(RuntimeError, match="x has 200 columns"):
        native.quant_linear(torch.randn(1, 200), q.u, q.scale, q.min, 8, 4, 0)
    with pytest.raises(RuntimeError, match="bits must be 8 or 4, got 3"):
        native.quant_linear(torch.randn(1, 128), q.u, q.scale, q.min, 8, 3, 0)
    with pytest.raises(RuntimeError, match="n = 17 does not fit 1 tiles of 16"):
        native.quant_linear(torch.randn(1, 128), q.u, q.scale, q.min, 17, 4, 0)
    with pytest.raises(RuntimeError, match="x: \\(rows, K\\) float32"):
        native.quant_linear(torch.randn(1, 128).double(), q.u, q.scale, q.min, 8, 4, 0)


@needs_native
@pytest.mark.parametrize("bits", [8, 4])
def test_linear_uses_the_quantized_weights_for_few_rows_only(bits: int) -> None:
    linear = Linear(576, 96)
    torch.nn.init.normal_(linear.weight)
    linear.quantize(bits)
    assert linear.quantized is not None
    few, many = torch.randn(linear.quant_rows, 576), torch.randn(linear.quant_rows + 1, 576)
    with torch.inference_mode():
        torch.testing.assert_close(linear(few), quant.quantized_linear(few, linear.quantized, quant.best_isa()))
        torch.testing.assert_close(linear(many), F.linear(many, linear.weight))
