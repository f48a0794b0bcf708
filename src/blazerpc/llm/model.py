"""A Llama decoder in PyTorch (gpt-fast style) over a paged KV cache.

One forward call serves a whole engine step: the tokens of every scheduled sequence are
flattened into one ``(N, dim)`` batch for the matrix products; attention is the only part
that looks at sequences, through ``AttentionBatch``. Weights use the Hugging Face layout
(``rotate_half`` RoPE); the GGUF loader un-permutes Q and K to match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels, quant
from .attention import Attention, AttentionBatch, KVCache
from .linear import Linear
from .module import Module
from .rope import rope_tables


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


class RMSNorm(Module):
    native: Callable[[Tensor, Tensor, float], Tensor] | None  # kernels.cpp's rms_norm (see Llama.prepare_decode)

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.native = None

    def forward(self, x: Tensor) -> Tensor:
        if self.native is not None:
            return self.native(x, self.weight, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class FeedForward(Module):
    silu_mul: Callable[[Tensor], Tensor] | None  # kernels.cpp's (see Llama.prepare_decode)

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.ffn_dim = config.ffn_dim
        self.w13 = Linear(config.dim, 2 * config.ffn_dim)  # gate and up, stacked
        self.w2 = Linear(config.ffn_dim, config.dim)  # down
        self.silu_mul = None

    def forward(self, x: Tensor) -> Tensor:
        gate_up = self.w13(x)  # (N, 2 ffn)
        if self.silu_mul is not None:
            return self.w2(self.silu_mul(gate_up))  # type: ignore[no-any-return]
        gate, up = gate_up.split(self.ffn_dim, dim=-1)
        out: Tensor = self.w2(F.silu(gate) * up)
        return out


class Block(Module):
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


class Llama(Module):
    rope_cos: Tensor
    rope_sin: Tensor
    # Where the native kernels run, prompt chunks attend in the decode rows' native call, each row
    # one query over its paged cache (rows of a chunk grouped; see paged_attention.cpp): 1.3-1.7x
    # faster than torch's RoPE, cache writes and flash attention for an 1,800-token prompt, and
    # than those ops' overhead on short ones. Elsewhere (GPU, no compiler) chunks go to torch.
    paged_prefill: bool

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
        self.paged_prefill = False

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def cast_weights(self, dtype: torch.dtype) -> None:
        """Matrices and the embedding in ``dtype``; norms, RoPE and the residual stream stay float32."""
        for module in self.modules():
            if isinstance(module, Linear | nn.Embedding):
                module.weight.data = module.weight.data.to(dtype)  # tied weights: the second is a no-op

    def quantize(self, fmt: str) -> None:
        """Quantized copies of the matrices (``int8`` or ``int4``) for decode steps' products.

        The LM head takes 8 bits in both: 4 bits cost it accuracy (GGUF files keep it in Q8_0 or
        better too). The float matrices stay, for prefill and steps of many rows (see ``Linear``).
        """
        for module in self.modules():
            if isinstance(module, Linear):
                module.quantize(8 if module is self.output else quant.FORMATS[fmt])

    def prepare_decode(self) -> None:
        """Weight copies and native kernels for decode steps on CPU (see ``Linear``, ``kernels``)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.prepare_decode()
        native = kernels.native() if self.tok_embeddings.weight.device.type == "cpu" else None
        self.paged_prefill = native is not None
        for module in self.modules():
            if isinstance(module, Attention):
                module.paged_decode = native.paged_decode if native is not None else None
                module.fused_decode = native.decode_attention if native is not None else None
            elif isinstance(module, RMSNorm):
                module.native = native.rms_norm if native is not None else None
            elif isinstance(module, FeedForward):
                module.silu_mul = native.silu_mul if native is not None else None

    def forward(self, tokens: Tensor, batch: AttentionBatch, cache: KVCache, logits_at: Tensor) -> Tensor:
        """Logits ``(len(logits_at), vocab)`` for the flat ``tokens`` (N,) of one engine step."""
        x = self.tok_embeddings(tokens).float()  # (N, dim)
        cos = self.rope_cos[batch.positions].unsqueeze(1)  # (N, 1, hd)
        sin = self.rope_sin[batch.positions].unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.k[i], cache.v[i], batch)
        logits: Tensor = self.output(self.norm(x[logits_at]))  # (len(logits_at), vocab)
        return logits
