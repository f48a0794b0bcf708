"""Attention over the paged KV cache: where a step's rows sit, the cache, and the layer.

Rows attended in place (decode tokens; on CPU, prompt chunks too) go to one native call a
layer (``paged_attention.cpp``); the rest to torch's ops: RoPE, cache writes, flash attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .linear import Linear
from .module import Module
from .rope import apply_rope

if TYPE_CHECKING:
    from .model import LlamaConfig


@dataclass(frozen=True)
class PrefillSpan:
    """One prompt chunk in the flat batch: rows ``start .. start + length - 1``.

    ``cached`` tokens before it are already in the cache (a shared prefix, earlier chunks);
    then ``table`` (blocks,) lists the sequence's cache blocks up to the chunk's end and ``mask``
    (length, cached + length) says which of those positions each of its queries sees.
    """

    start: int
    length: int
    cached: int = 0
    table: Tensor | None = None
    mask: Tensor | None = None


@dataclass
class AttentionBatch:
    """Where a step's tokens sit: rows attended in place first, then prefill chunks.

    The first ``num_paged`` rows each attend straight from the paged cache, as one query: every
    decode token, and where the native kernels run the rows of prompt chunks too (each row is
    then one query over its sequence's first ``position + 1`` tokens; see ``Llama.paged_prefill``).
    ``slot_blocks``, ``slot_offsets`` (N,): the cache block of each new token, and its place in it.
    ``paged_tables`` (P, W): each paged row's sequence's cache blocks, padded with block 0.
    ``paged_lens`` (P,): how many tokens each paged row attends to (its own included).
    ``prefill_spans``: the other chunks, attended with torch's attention over their rows.
    """

    slot_blocks: Tensor
    slot_offsets: Tensor
    positions: Tensor
    num_paged: int
    paged_tables: Tensor | None
    paged_lens: Tensor | None
    prefill_spans: list[PrefillSpan]


class KVCache(nn.Module):
    """K and V of every layer in blocks, heads first:

    ``k``: ``(layers, n_kv_heads, num_blocks, head_dim, block_size)``, each block's keys transposed;
    ``v``: ``(layers, n_kv_heads, num_blocks, block_size, head_dim)``.

    A block's keys are then what a block of scores needs, ``q @ K.T``, and its values what the
    output needs, ``p @ V``, both as plain row-major matrices (see ``paged_attention.cpp``).
    """

    k: Tensor
    v: Tensor

    def __init__(
        self,
        config: LlamaConfig,
        num_blocks: int,
        block_size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        blocks = (config.n_layers, config.n_kv_heads, num_blocks)
        k, v = (config.head_dim, block_size), (block_size, config.head_dim)
        self.register_buffer("k", torch.zeros(*blocks, *k, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(*blocks, *v, device=device, dtype=dtype), persistent=False)


class Attention(Module):
    paged_decode: kernels.PagedDecode | None  # paged_attention.cpp's, when built (see Llama.prepare_decode)
    fused_decode: Callable[..., Tensor] | None  # paged_attention.cpp's decode_attention: RoPE, writes, attention

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim)
        self.wo = Linear(config.n_heads * config.head_dim, config.dim)
        self.paged_decode = self.fused_decode = None

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch
    ) -> Tensor:
        n, h, kvh, hd, p = x.shape[0], self.n_heads, self.n_kv_heads, self.head_dim, batch.num_paged
        qkv = self.wqkv(x)  # (N, (H + 2 KVH) * hd)
        paged = None
        if self.fused_decode is not None and p:  # the paged rows in one native call
            slots = batch.slot_blocks[:p], batch.slot_offsets[:p]
            tables, lens = batch.paged_tables, batch.paged_lens
            paged = self.fused_decode(qkv[:p], cos[:p], sin[:p], k_cache, v_cache, *slots, tables, lens, h, hd**-0.5)
            if p == n:
                return self.wo(paged)  # type: ignore[no-any-return]
        first = p if paged is not None else 0  # rows still to rotate and write to the cache
        qk = apply_rope(qkv[first:, : (h + kvh) * hd].view(n - first, h + kvh, hd), cos[first:], sin[first:])
        q, k = qk[:, :h], qk[:, h:]  # (N - first, H, hd), (N - first, KVH, hd)
        v = qkv[first:, (h + kvh) * hd :].view(n - first, kvh, hd)
        blocks, offsets = batch.slot_blocks[first:], batch.slot_offsets[first:]
        k_cache[:, blocks, :, offsets] = k.to(k_cache.dtype)  # indexed shape: (N - first, KVH, hd)
        v_cache[:, blocks, offsets] = v.transpose(0, 1).to(v_cache.dtype)  # (KVH, N - first, hd)

        out = x.new_empty(n, h, hd)
        if paged is not None:
            out[:p] = paged.view(p, h, hd)
        elif p:
            assert batch.paged_tables is not None and batch.paged_lens is not None
            tables, lens = batch.paged_tables, batch.paged_lens
            if self.paged_decode is not None:
                out[:p] = self.paged_decode(q[:p], k_cache, v_cache, tables, lens, hd**-0.5)
            else:
                out[:p] = self.decode_attention(q[:p], k_cache, v_cache, tables, lens)
        for chunk in batch.prefill_spans:
            span = slice(chunk.start - first, chunk.start - first + chunk.length)  # rows of q, k, v
            # 4-D (1, heads, L, hd): torch's CPU flash kernel takes only that; 3-D went to the math
            # path, 2x slower causal and 4x with a mask (1,800 keys), which materialises the scores.
            qs = q[span].transpose(0, 1).unsqueeze(0)  # (1, H, L, hd)
            if chunk.table is None:  # the whole prompt is here: plain causal attention
                # K and V as the cache holds them (rounded to its dtype), as a later chunk or decode step sees them
                ks = k[span].transpose(0, 1).to(k_cache.dtype).to(qs.dtype)  # (KVH, L, hd)
                vs = v[span].transpose(0, 1).to(v_cache.dtype).to(qs.dtype)
                attended = F.scaled_dot_product_attention(qs, ks[None], vs[None], is_causal=True, enable_gqa=True)
            else:
                ks, vs = self.cached_context(k_cache, v_cache, chunk.table, chunk.cached + chunk.length)
                ks, vs = ks.to(qs.dtype)[None], vs.to(qs.dtype)[None]  # (1, KVH, cached + L, hd)
                attended = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=chunk.mask, enable_gqa=True)
            out[chunk.start : chunk.start + chunk.length] = attended[0].transpose(0, 1)
        projected: Tensor = self.wo(out.view(n, h * hd))
        return projected

    @staticmethod
    def cached_context(k_cache: Tensor, v_cache: Tensor, table: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """K and V of a sequence's first ``length`` positions, gathered from its blocks: (KVH, T, hd) each."""
        kvh, hd = k_cache.shape[0], k_cache.shape[2]
        keys = k_cache[:, table].transpose(2, 3).reshape(kvh, -1, hd)[:, :length]  # blocks hold K transposed
        values = v_cache[:, table].reshape(kvh, -1, hd)[:, :length]
        return keys, values

    def decode_attention(self, q: Tensor, k_cache: Tensor, v_cache: Tensor, tables: Tensor, lens: Tensor) -> Tensor:
        """``paged_decode`` in torch ops (no native kernel, or a GPU): q (Bd, H, hd) -> (Bd, H, hd).

        Gathers each sequence's blocks per KV head into a padded copy; the query heads that
        share a KV head are the rows of one ``(g, hd) @ (hd, T)`` product, so GQA repeats no keys.
        """
        d, kvh, hd = q.shape[0], self.n_kv_heads, self.head_dim
        g, (num_blocks, block_size) = self.n_heads // kvh, (k_cache.shape[1], k_cache.shape[3])
        heads = torch.arange(kvh, device=tables.device).unsqueeze(1) * num_blocks
        rows = (heads + tables.reshape(1, -1)).reshape(-1)  # (KVH * Bd * W,) rows of the views below
        keys = k_cache.view(kvh * num_blocks, -1).index_select(0, rows).view(kvh * d, -1, hd, block_size)
        values = v_cache.view(kvh * num_blocks, -1).index_select(0, rows).view(kvh * d, -1, hd)  # (KVH Bd, T, hd)
        queries = (q * hd**-0.5).view(d, kvh, g, hd).transpose(0, 1).reshape(kvh * d, 1, g, hd)
        scores = torch.matmul(queries.to(keys.dtype), keys)  # (KVH * Bd, W, g, block_size)
        scores = scores.transpose(1, 2).reshape(kvh * d, g, -1).float()  # (KVH * Bd, g, T)
        padding = torch.arange(scores.shape[-1], device=lens.device) >= lens.unsqueeze(1)  # (Bd, T)
        scores.masked_fill_(padding.repeat(kvh, 1).unsqueeze(1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        out = torch.bmm(probs, values).to(q.dtype)  # (KVH * Bd, g, hd)
        return out.view(kvh, d, g, hd).transpose(0, 1).reshape(d, kvh * g, hd)
