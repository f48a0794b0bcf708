"""Weight-only quantization: matrices in 8 or 4 bits per weight for decode steps (``quant.cpp``).

Weights are quantized in groups of 32 along a row, ``w = scale * u + min`` with ``u`` unsigned:

- ``int8``: ``u = q + 128`` for ``q = round(w / scale)`` in -127..127, ``scale = max|w| / 127``
  and ``min = -128 * scale`` (GGUF's Q8_0, shifted; 9 bits a weight with scale and min).
- ``int4``: ``u`` in 0..15, ``scale = (max - min) / 15`` over the group (GGUF's Q4_1: 5 bits a
  weight). A GGUF file's Q4_1 and Q8_0 tensors come back exactly: their dequantized values
  quantize to the same integers, scales and mins.

Rows are padded with zeros to a multiple of 64 weights, the kernel's step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GROUP = 32
CHUNK = 64
FORMATS = {"int8": 8, "int4": 4}
ISAS = ("portable", "avx2", "avx512_vnni")  # quant.cpp's paths, by their index there


@dataclass(frozen=True)
class QuantizedWeight:
    bits: int
    u: Tensor  # uint8 (N, Kp) for 8 bits; (N, Kp / 2) for 4, byte i of a group holding weights i and i + 16
    scale: Tensor  # float16 (N, Kp / 32)
    min: Tensor  # float16 (N, Kp / 32)
    in_features: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.u, self.scale, self.min))


def quantize(w: Tensor, bits: int) -> QuantizedWeight:
    """``w`` (N, K) in ``bits`` (8 or 4) per weight, groups of 32 along K."""
    n, k = w.shape
    padded = -(-k // CHUNK) * CHUNK
    groups = F.pad(w.detach().float(), (0, padded - k)).view(n, padded // GROUP, GROUP)
    if bits == 8:
        scale = (groups.abs().amax(-1) / 127).half()
        q = _divide(groups, scale.float()[..., None]).round().clamp(-127, 127)
        u, minimum = (q + 128).to(torch.uint8), -128 * scale
    elif bits == 4:
        low, high = groups.amin(-1), groups.amax(-1)
        scale, minimum = ((high - low) / 15).half(), low.half()
        q = _divide(groups - minimum.float()[..., None], scale.float()[..., None]).round().clamp(0, 15)
        q = q.to(torch.uint8)
        u = q[..., :16] | (q[..., 16:] << 4)  # (N, groups, 16)
    else:
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    return QuantizedWeight(bits, u.reshape(n, -1).contiguous(), scale.contiguous(), minimum.contiguous(), k)


def dequantize(q: QuantizedWeight) -> Tensor:
    """The float32 weights ``q`` stands for, (N, K)."""
    n = q.u.shape[0]
    if q.bits == 8:
        u = q.u.view(n, -1, GROUP)
    else:
        packed = q.u.view(n, -1, 16)
        u = torch.cat([packed & 0x0F, packed >> 4], dim=-1)
    w = u.float() * q.scale.float()[..., None] + q.min.float()[..., None]
    return w.reshape(n, -1)[:, : q.in_features]


def quantized_linear(x: Tensor, q: QuantizedWeight, isa: int) -> Tensor:
    """``x @ W.T`` for float32 ``x`` (up to 64 rows) with ``quant.cpp``'s ``isa`` path."""
    from . import kernels

    module = kernels.native()
    assert module is not None, "quantized weights need the native kernels"
    out: Tensor = module.quant_linear(x, q.u, q.scale, q.min, q.bits, isa)
    return out


@functools.cache
def best_isa() -> int:
    """The fastest of ``quant.cpp``'s paths this CPU runs (detected, never assumed)."""
    cpu = torch.cpu
    if cpu._is_avx512_supported() and cpu._is_vnni_supported():
        return ISAS.index("avx512_vnni")
    if cpu._is_avx2_supported():
        return ISAS.index("avx2")
    return ISAS.index("portable")


def _divide(a: Tensor, b: Tensor) -> Tensor:
    """``a / b``, 0 where ``b`` is 0 (a group of equal weights)."""
    return torch.where(b > 0, a / torch.where(b > 0, b, 1), 0)
