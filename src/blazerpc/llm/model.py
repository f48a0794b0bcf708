"""A Llama decoder in PyTorch (gpt-fast style) over a paged KV cache.

One forward call serves a whole engine step: the tokens of every scheduled sequence are
flattened into one ``(N, dim)`` batch for the matrix products; attention is the only part
that looks at sequences, through ``AttentionBatch``. Weights use the Hugging Face layout
(``rotate_half`` RoPE); the GGUF loader un-permutes Q and K to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"dim {self.dim} must divide by n_heads {self.n_heads}, and n_heads by n_kv_heads {self.n_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass
class AttentionBatch:
    """Where a step's tokens sit: decode tokens first (one per sequence), then prefills.

    ``slot_mapping`` (N,): the cache slot each new token's K/V is written to.
    ``decode_slots`` (Bd, T): cache slots of each decoding sequence's context, padded.
    ``decode_mask`` (Bd, 1, 1, T): True where a decoding sequence may attend.
    ``prefill_spans``: (start, length) of each prefilling sequence in the flat batch.
    """

    slot_mapping: Tensor
    positions: Tensor
    num_decode: int
    decode_slots: Tensor | None
    decode_mask: Tensor | None
    prefill_spans: list[tuple[int, int]]


class KVCache(nn.Module):
    """K and V for every layer, as flat slots: ``(layers, num_slots, n_kv_heads, head_dim)``."""

    k: Tensor
    v: Tensor

    def __init__(self, config: LlamaConfig, num_slots: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        shape = (config.n_layers, num_slots, config.n_kv_heads, config.head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device), persistent=False)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch
    ) -> Tensor:
        n = x.shape[0]
        q = self.wq(x).view(n, self.n_heads, self.head_dim)  # (N, H, hd)
        k = self.wk(x).view(n, self.n_kv_heads, self.head_dim)  # (N, KVH, hd)
        v = self.wv(x).view(n, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_cache[batch.slot_mapping] = k
        v_cache[batch.slot_mapping] = v

        out = torch.empty_like(q)
        d = batch.num_decode
        if d:
            assert batch.decode_slots is not None
            qd = q[:d].unsqueeze(2)  # (Bd, H, 1, hd)
            kd = k_cache[batch.decode_slots].transpose(1, 2)  # (Bd, KVH, T, hd)
            vd = v_cache[batch.decode_slots].transpose(1, 2)
            attn = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=batch.decode_mask, enable_gqa=True)
            out[:d] = attn.squeeze(2)
        for start, length in batch.prefill_spans:
            span = slice(start, start + length)
            qs, ks, vs = q[span].transpose(0, 1), k[span].transpose(0, 1), v[span].transpose(0, 1)  # (H, L, hd)
            out[span] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True).transpose(0, 1)
        return self.wo(out.view(n, -1))  # type: ignore[no-any-return]


class FeedForward(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(config.dim, config.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(config.ffn_dim, config.dim, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # type: ignore[no-any-return]


class Block(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch
    ) -> Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, k_cache, v_cache, batch)
        out: Tensor = x + self.feed_forward(self.ffn_norm(x))
        return out


class Llama(nn.Module):
    rope_cos: Tensor
    rope_sin: Tensor

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: Tensor, batch: AttentionBatch, cache: KVCache, logits_at: Tensor) -> Tensor:
        """Logits ``(len(logits_at), vocab)`` for the flat ``tokens`` (N,) of one engine step."""
        x = self.tok_embeddings(tokens)  # (N, dim)
        cos = self.rope_cos[batch.positions].unsqueeze(1)  # (N, 1, hd)
        sin = self.rope_sin[batch.positions].unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.k[i], cache.v[i], batch)
        logits: Tensor = self.output(self.norm(x[logits_at]))  # (len(logits_at), vocab)
        return logits


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd): half-split layout
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
