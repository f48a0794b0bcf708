"""Rotary position embedding in the half-split (Hugging Face) layout: tables and their use."""

from __future__ import annotations

import torch
from torch import Tensor


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[Tensor, Tensor]:
    """``cos`` and a signed ``sin``, each (T, hd), for the half-split (Hugging Face) layout."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (T, hd/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)
    sin = torch.cat([-angles.sin(), angles.sin()], dim=-1)  # the sign of rotate_half, folded in
    return cos.float(), sin.float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x * cos + rotate_half(x) * sin`` for x (N, heads, hd); swapping halves is one flip."""
    n, heads, hd = x.shape
    swapped = x.view(n, heads, 2, hd // 2).flip(2).view(n, heads, hd)
    return torch.addcmul(x * cos, swapped, sin)
