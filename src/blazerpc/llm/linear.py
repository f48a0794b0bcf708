"""``Linear``: a weight matrix that picks the fastest CPU kernel for each step's number of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu, kernels, quant
from .module import Module

PACKED_BF16, PACKED_AVX2 = 0, 1  # packed_linear.cpp's paths


class Linear(Module):
    """``y = x @ W.T``, with the fastest CPU kernel for the number of rows.

    Decode products are bound by memory bandwidth (the weights do not fit in cache), and
    torch's one-row products read them on one core. Measured on 2-core Zen 3 and Zen 4 VMs:

    - float32 weights: one ``bmm`` over the two row halves of W runs a half on each core,
      ~33 GB/s for one row (``x @ W_t``: ~17 GB/s, ``F.linear``: ~10 GB/s) and 1.5-4x
      ``F.linear`` for 2-4 rows; 5-64 rows are fastest in oneDNN (1.2-1.6x ``F.linear``);
      prefill goes to ``F.linear``. With one thread, one row uses a pre-transposed copy.
    - bfloat16 weights (``Llama.cast_weights``) on a CPU with AVX512-BF16: every number of rows
      goes to our kernel over W packed once at load (``packed_linear.cpp``), which overlaps
      reading W with the arithmetic: over the default model's 30 layers, 1.4x oneDNN (W
      prepacked) at 8-16 rows, 1.5x at 32, 1.18x at 128, even from 512 up; 1.3x+ the
      few-rows kernel below at 1-4 rows. On AVX2 CPUs (and AVX-512 ones without BF16) the same
      kernel and layout widen W's pairs to float32 and multiply float32 x (see there).
    - bfloat16 weights on a CPU with AMX: oneDNN's products with W prepacked (below), which run
      on the AMX tiles: over the default model's 30 layers (Sapphire Rapids VM, 2 cores) 26.8 ms
      at 128 rows against 134.6 for ours, 17.8 against 36.6 at 32, even at 8.
    - bfloat16 weights elsewhere (no native kernels, or a CPU without AVX2): on AVX-512 CPUs
      oneDNN in bfloat16 is ~2x float32 from 8 rows up, and ~1.4x more with W packed once in its
      blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, as Inductor and vLLM's CPU
      backend do; it refuses CPUs without AVX-512). It reads W at ~11-14 GB/s for 1-4 rows: those
      go to ``kernels.cpp``'s few-rows kernel (1.3-1.5x torch's), or, where it could not be
      built, one row takes the float32 split on a float32 copy.

    - quantized weights (``quantize``: int8 or int4, ``quant.cpp``): up to ``quant_rows`` rows
      read them instead, 2-3.5x fewer bytes than bfloat16; more rows are compute-bound and go
      to the float weights above.

    ``prepare_decode`` makes the copies and picks the kernels.
    """

    SPLIT_ROWS = 4  # up to this many rows, split float32 W in halves across two cores
    ONEDNN_ROWS = 64
    KERNEL_ROWS = 4  # up to this many rows, bfloat16 W goes to kernels.cpp
    # Up to how many rows quantized W (when there is one) goes to quant.cpp, by CPU class and bits:
    # where it stops beating the class's float products (docs/llm.md, measured over the default
    # model's matrices). With AVX-512 VNNI, 8 (the packed bfloat16 kernel is fast from 9 rows on);
    # with AVX2, int4 beats float32 (MKL) up to ~40 rows (52.9 vs 66.5 ms over 30 layers at 32 rows,
    # 75.5 vs 69.9 at 48) and int8 up to ~28 (51.4 vs 58.8 at 24, 66.5 vs 66.5 at 32).
    QUANT_ROWS: ClassVar[dict[str, dict[int, int]]] = {"avx2": {4: 40, 8: 28}}
    DEFAULT_QUANT_ROWS = 8

    weight_f32: Tensor | None  # W in float32, for the split (W itself when it is float32)
    weight_t: Tensor | None
    weight_onednn: Tensor | None
    weight_packed: Tensor | None  # bfloat16 W in oneDNN's blocked layout
    weight_blocks: Tensor | None  # bfloat16 W in packed_linear.cpp's layout (see pack_blocks)
    packed: Callable[[Tensor, Tensor, int, int], Tensor] | None  # packed_linear.cpp's packed_linear
    packed_isa: int  # its path: PACKED_BF16 or PACKED_AVX2
    few_rows: Callable[[Tensor, Tensor], Tensor] | None  # kernels.cpp's few_rows_linear
    quantized: quant.QuantizedWeight | None

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_f32 = self.weight_t = self.weight_onednn = self.weight_packed = self.weight_blocks = None
        self.few_rows = self.packed = self.quantized = None
        self.packed_isa = PACKED_BF16
        self.quant_rows = self.DEFAULT_QUANT_ROWS
        self.isa = quant.best_isa()

    def quantize(self, bits: int) -> None:
        """A copy of W in ``bits`` (8 or 4) per weight for steps of up to ``quant_rows`` rows."""
        self.quantized = quant.quantize(self.weight, bits)
        self.quant_rows = self.QUANT_ROWS.get(cpu.isa(), {}).get(bits, self.DEFAULT_QUANT_ROWS)

    def prepare_decode(self) -> None:
        if self.weight.device.type != "cpu":
            return
        w = self.weight.detach()
        module = kernels.native()
        # With AMX, oneDNN's products (below) are 2-5x ours from 16 rows up, and even at 8
        if w.dtype == torch.bfloat16 and module is not None and cpu.at_least("avx2") and not cpu.at_least("amx"):
            self.weight_blocks, self.packed = pack_blocks(w), module.packed_linear
            self.packed_isa = PACKED_BF16 if cpu.at_least("avx512_bf16") else PACKED_AVX2
            return
        if w.dtype == torch.bfloat16 and module is not None:
            self.few_rows = module.few_rows_linear
        # torch's bfloat16 reorder needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, and raises elsewhere
        if w.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available() and cpu.at_least("avx512"):  # type: ignore[no-untyped-call]
            self.weight_packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        elif w.shape[0] % 2 == 0:
            self.weight_f32 = w.float()  # no copy when W is float32
        if w.dtype == torch.float32:
            self.weight_t = w.t().contiguous()
            if torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
                self.weight_onednn = w.to_mkldnn()

    def forward(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        if self.quantized is not None and rows <= self.quant_rows:
            return quant.quantized_linear(x, self.quantized, self.isa)
        if self.packed is not None and self.weight_blocks is not None:
            return self.packed(x, self.weight_blocks, self.weight.shape[0], self.packed_isa)
        can_split = self.weight_f32 is not None and torch.get_num_threads() >= 2
        if self.weight.dtype != x.dtype:  # reduced-precision weights: multiply in their dtype
            if self.few_rows is not None and rows <= self.KERNEL_ROWS:
                return self.few_rows(x, self.weight)
            if rows == 1 and can_split:
                return self._split(x, self.weight_f32)
            if self.weight_packed is not None:
                packed = torch.ops.mkldnn._linear_pointwise(
                    x.to(self.weight.dtype), self.weight_packed, None, "none", [None], ""
                )
                return packed.to(x.dtype)  # type: ignore[no-any-return]
            return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
        if self.weight_t is None or rows > self.ONEDNN_ROWS:
            return F.linear(x, self.weight)
        if rows <= self.SPLIT_ROWS and can_split:
            return self._split(x, self.weight)
        if rows == 1:
            row: Tensor = x @ self.weight_t
            return row
        if self.weight_onednn is not None:
            out: Tensor = torch._C._nn.mkldnn_linear(x.to_mkldnn(), self.weight_onednn, None).to_dense()
            return out
        return F.linear(x, self.weight)

    @staticmethod
    def _split(x: Tensor, weight: Tensor | None) -> Tensor:
        """One ``bmm`` over the two row halves of ``weight``: one half per core."""
        assert weight is not None
        rows, (out_features, in_features) = x.shape[0], weight.shape
        halves = weight.view(2, out_features // 2, in_features)  # a view: no copy
        # x transposed, strides (0, 1, in): MKL takes a slow path for other strides
        cols = x.contiguous().t().unsqueeze(0).expand(2, in_features, rows)
        y = torch.bmm(halves, cols)  # (2, out/2, rows)
        return y.permute(2, 0, 1).reshape(rows, out_features)


def pack_blocks(w: Tensor) -> Tensor:
    """bfloat16 ``w`` (N, K) in ``packed_linear.cpp``'s layout: (N / 64, K / 2, 64) int32.

    Rows in blocks of 64 (padded with zero rows), and in a block, for each pair of columns (K
    padded to even), the 64 rows' two values side by side: one 32-bit lane per row.
    """
    n, k = w.shape
    padded = F.pad(w.detach().bfloat16(), (0, k % 2, 0, -n % 64))
    pairs = padded.view(-1, 64, padded.shape[1] // 2, 2).permute(0, 2, 1, 3).contiguous()
    return pairs.view(torch.int32).view(pairs.shape[0], pairs.shape[1], 64)
