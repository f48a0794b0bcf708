"""The native kernels against torch, and the model with and without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blazerpc.llm import kernels
from blazerpc.llm.loader import load
from blazerpc.llm.model import Linear

from .test_model import decode_logits

native = kernels.native()
needs_native = pytest.mark.skipif(native is None, reason="the native kernels could not be built here (no compiler?)")


@needs_native
@pytest.mark.parametrize("rows", range(1, 9))
@pytest.mark.parametrize(("n", "k"), [(96, 576), (37, 40), (5, 1537)])  # k not a multiple of 16, n odd
def test_few_rows_linear_matches_torch(rows: int, n: int, k: int) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g).bfloat16()
    torch.testing.assert_close(native.few_rows_linear(x, w), F.linear(x, w.float()), atol=1e-3, rtol=1e-4)
    strided = torch.randn(k, rows, generator=g).t()  # a transposed view is made contiguous first
    torch.testing.assert_close(native.few_rows_linear(strided, w), F.linear(strided, w.float()), atol=1e-3, rtol=1e-4)


@needs_native
def test_few_rows_linear_refuses_what_it_cannot_do() -> None:
    assert native is not None
    w = torch.randn(8, 16).bfloat16()
    with pytest.raises(RuntimeError, match="at most 8 rows, got 9"):
        native.few_rows_linear(torch.randn(9, 16), w)
    with pytest.raises(RuntimeError, match="x has 15 columns, w 16"):
        native.few_rows_linear(torch.randn(1, 15), w)
    with pytest.raises(RuntimeError, match="bfloat16"):
        native.few_rows_linear(torch.randn(1, 16), w.float())


@needs_native
def test_bfloat16_model_gives_the_same_logits_with_or_without_the_kernel(tiny_dir: Path) -> None:
    loaded = load(tiny_dir, max_seq_len=512, dtype=torch.bfloat16)
    prompts = [loaded.tokenizer.encode(text) for text in ["One", "Two prompts", "And a third one"]]
    linears = [m for m in loaded.model.modules() if isinstance(m, Linear)]
    assert all(m.few_rows is not None for m in linears)
    with_kernel = decode_logits(loaded, prompts, steps=5)
    for m in linears:  # what the model does where the kernel could not be built
        m.few_rows = None
        m.weight_f32 = m.weight.detach().float()
    without = decode_logits(loaded, prompts, steps=5)
    for a, b in zip(with_kernel, without, strict=True):
        # bf16 rounding of x in torch's path, float32 x in the kernel: close, not equal
        assert F.cosine_similarity(torch.stack(a), torch.stack(b), dim=-1).min() > 0.999
