"""Weight-only quantization: matrices in 8 or 4 bits per weight for decode steps (``quant.cpp``).

Weights are quantized in groups of 32 along a row, ``w = scale * u + min`` with ``u`` unsigned:

- ``int8``: ``u = q + 128`` for ``q = round(w / scale)`` in -127..127, ``scale = max|w| / 127``
  and ``min = -128 * scale`` (GGUF's Q8_0, shifted; 9 bits a weight with scale and min).
- ``int4``: ``u`` in 0..15, ``scale = (max - min) / 15`` over the group (GGUF's Q4_1: 5 bits a
  weight). A GGUF file's Q4_1 and Q8_0 tensors come back exactly: their dequantized values
  quantize to the same integers, scales and mins.

Rows are padded with zeros to a multiple of 32 weights and the matrix to a multiple of 16 rows,
then packed for ``quant.cpp``: each tile of 16 rows keeps a group's bytes together, one row per
32-bit lane (see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu, kernels

GROUP = 32
TILE = 16
FORMATS = {"int8": 8, "int4": 4}
ISAS = ("portable", "avx2", "avx512_vnni")  # quant.cpp's paths, by their index there


@dataclass(frozen=True)
class QuantizedWeight:
    bits: int
    u: Tensor  # uint8 (N / 16, K / 32, 16 * 32 * bits / 8): tiles of 16 rows, by group
    scale: Tensor  # float16 (N / 16, K / 32, 16)
    min: Tensor  # float16 (N / 16, K / 32, 16)
    out_features: int
    in_features: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.u, self.scale, self.min))


def quantize(w: Tensor, bits: int) -> QuantizedWeight:
    """``w`` (N, K) in ``bits`` (8 or 4) per weight, groups of 32 along K."""
    n, k = w.shape
    groups = F.pad(w.detach().float(), (0, -k % GROUP, 0, -n % TILE))
    groups = groups.view(groups.shape[0], -1, GROUP)  # (N16, G, 32)
    if bits == 8:
        scale = (groups.abs().amax(-1) / 127).half()
        q = _divide(groups, scale.float()[..., None]).round().clamp(-127, 127)
        u, minimum = (q + 128).to(torch.uint8), -128 * scale
    elif bits == 4:
        low, high = groups.amin(-1), groups.amax(-1)
        scale, minimum = ((high - low) / 15).half(), low.half()
        u = _divide(groups - minimum.float()[..., None], scale.float()[..., None]).round().clamp(0, 15).to(torch.uint8)
    else:
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    return QuantizedWeight(bits, _pack(u, bits), _lanes(scale), _lanes(minimum), n, k)


def dequantize(q: QuantizedWeight) -> Tensor:
    """The float32 weights ``q`` stands for, (N, K)."""
    u = _unpack(q.u, q.bits).float()  # (N16, G, 32)
    scale, minimum = (t.permute(0, 2, 1).reshape(-1, t.shape[1], 1).float() for t in (q.scale, q.min))
    w = u * scale + minimum
    return w.reshape(w.shape[0], -1)[: q.out_features, : q.in_features]


def _pack(u: Tensor, bits: int) -> Tensor:
    """(N16, G, 32) values -> (N16 / 16, G, 16 * 32 * bits / 8) bytes in quant.cpp's order."""
    n16, g, _ = u.shape
    if bits == 8:  # vector t, lane i: bytes 4t..4t+3 of row i
        return u.view(n16 // TILE, TILE, g, 8, 4).permute(0, 2, 3, 1, 4).reshape(n16 // TILE, g, -1).contiguous()
    # vector s, lane i: values 8s..8s+3 in the low nibbles, 8s+4..8s+7 in the high ones
    halves = u.view(n16 // TILE, TILE, g, 4, 2, 4)
    packed = halves[..., 0, :] | (halves[..., 1, :] << 4)  # (tiles, 16, G, 4, 4)
    return packed.permute(0, 2, 3, 1, 4).reshape(n16 // TILE, g, -1).contiguous()


def _unpack(packed: Tensor, bits: int) -> Tensor:
    tiles, g, _ = packed.shape
    if bits == 8:
        return packed.view(tiles, g, 8, TILE, 4).permute(0, 3, 1, 2, 4).reshape(tiles * TILE, g, GROUP)
    nibbles = packed.view(tiles, g, 4, TILE, 4)
    values = torch.stack([nibbles & 0x0F, nibbles >> 4], dim=3)  # (tiles, G, 4, 2, 16, 4)
    return values.permute(0, 4, 1, 2, 3, 5).reshape(tiles * TILE, g, GROUP)


def _lanes(values: Tensor) -> Tensor:
    """(N16, G) per-row values -> (N16 / 16, G, 16): a tile's group's 16 rows together."""
    n16, g = values.shape
    return values.view(n16 // TILE, TILE, g).permute(0, 2, 1).contiguous()


def quantized_linear(x: Tensor, q: QuantizedWeight, isa: int) -> Tensor:
    """``x @ W.T`` for float32 ``x`` (up to 64 rows) with ``quant.cpp``'s ``isa`` path."""
    module = kernels.native()
    assert module is not None, "quantized weights need the native kernels"
    out: Tensor = module.quant_linear(x, q.u, q.scale, q.min, q.out_features, q.bits, isa)
    return out


def best_isa() -> int:
    """The fastest of ``quant.cpp``'s paths the engine may run here (``cpu.isa()``: detected, or capped)."""
    if cpu.at_least("avx512"):
        return ISAS.index("avx512_vnni")
    if cpu.at_least("avx2"):
        return ISAS.index("avx2")
    return ISAS.index("portable")


def _divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / b``, 0 where ``b`` is 0 (a group of equal weights)."""
    return torch.where(b > 0, a / torch.where(b > 0, b, 1), 0)
