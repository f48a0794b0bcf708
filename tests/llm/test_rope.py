"""RoPE against the Hugging Face formula, ``x * cos + rotate_half(x) * sin``."""

from __future__ import annotations

import torch

from blazerpc.llm.rope import apply_rope, rope_tables


def test_apply_rope_is_hugging_face_s_rotate_half_and_keeps_each_pair_s_length() -> None:
    head_dim, positions = 64, torch.tensor([0, 5, 511])
    cos, sin = rope_tables(head_dim, 512, 10000.0)
    x = torch.randn(3, 4, head_dim, generator=torch.Generator().manual_seed(0))
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(positions.double(), inv_freq)
    c, s = torch.cat([angles.cos()] * 2, -1)[:, None], torch.cat([angles.sin()] * 2, -1)[:, None]
    half = head_dim // 2
    rotate_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1).double()
    expected = x.double() * c + rotate_half * s
    got = apply_rope(x, cos[positions].unsqueeze(1), sin[positions].unsqueeze(1))
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    pairs = lambda t: t[..., :half] ** 2 + t[..., half:] ** 2  # noqa: E731
    torch.testing.assert_close(pairs(got), pairs(x), atol=1e-4, rtol=1e-4)
    assert torch.equal(got[0], x[0])  # position 0: no rotation
