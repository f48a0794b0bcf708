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


class Linear(nn.Module):
    """``y = x @ W.T``, with the fastest CPU kernel for the number of rows.

    Decode products are bound by memory bandwidth (the weights do not fit in cache), and
    torch's one-row GEMV reads them on one core. Measured on a 2-core AVX2 machine: one
    ``bmm`` over the two row halves of W runs a half on each core, ~30 GB/s for one row
    (``x @ W_t``: ~17 GB/s, ``F.linear``: ~10 GB/s) and 1.5-4x ``F.linear`` for 2-4 rows;
    5-64 rows are fastest in oneDNN (1.2-1.6x ``F.linear``); prefill goes to ``F.linear``.
    With one thread, one row uses a pre-transposed copy. ``prepare_decode`` makes the copies.
    """

    SPLIT_ROWS = 4  # up to this many rows, split W in halves across two cores
    ONEDNN_ROWS = 64

    weight_t: Tensor | None
    weight_onednn: Tensor | None

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_t = self.weight_onednn = None

    def prepare_decode(self) -> None:
        if self.weight.device.type != "cpu":
            return
        self.weight_t = self.weight.detach().t().contiguous()
        if torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
            self.weight_onednn = self.weight.detach().to_mkldnn()

    def forward(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        out_features, in_features = self.weight.shape
        if self.weight_t is None or rows > self.ONEDNN_ROWS:
            return F.linear(x, self.weight)
        two_cores = torch.get_num_threads() >= 2
        if rows <= self.SPLIT_ROWS and two_cores and out_features % 2 == 0:
            halves = self.weight.view(2, out_features // 2, in_features)  # a view: no copy
            # x transposed, strides (0, 1, in): MKL takes a slow path for other strides
            cols = x.contiguous().t().unsqueeze(0).expand(2, in_features, rows)
            y = torch.bmm(halves, cols)  # (2, out/2, rows): one half per core
            return y.permute(2, 0, 1).reshape(rows, out_features)
        if rows == 1:
            row: Tensor = x @ self.weight_t
            return row
        if self.weight_onednn is not None:
            out: Tensor = torch._C._nn.mkldnn_linear(x.to_mkldnn(), self.weight_onednn, None).to_dense()
            return out
        return F.linear(x, self.weight)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim)
        self.wo = Linear(config.n_heads * config.head_dim, config.dim)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch
    ) -> Tensor:
        n, h, kvh, hd = x.shape[0], self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x)  # (N, (H + 2 KVH) * hd)
        qk = apply_rope(qkv[:, : (h + kvh) * hd].view(n, h + kvh, hd), cos, sin)  # q and k in one go
        q, k = qk[:, :h], qk[:, h:]  # (N, H, hd), (N, KVH, hd)
        v = qkv[:, (h + kvh) * hd :].view(n, kvh, hd)
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
        projected: Tensor = self.wo(out.view(n, h * hd))
        return projected


class FeedForward(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.ffn_dim = config.ffn_dim
        self.w13 = Linear(config.dim, 2 * config.ffn_dim)  # gate and up, stacked
        self.w2 = Linear(config.ffn_dim, config.dim)  # down

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.ffn_dim, dim=-1)  # (N, ffn) each
        out: Tensor = self.w2(F.silu(gate) * up)
        return out


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
        self.output = Linear(config.dim, config.vocab_size)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight  # type: ignore[assignment]
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def prepare_decode(self) -> None:
        """Pre-transposed weight copies for single-sequence decode steps (see ``Linear``)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.prepare_decode()

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
