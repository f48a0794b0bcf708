"""Load a Llama-architecture model from a GGUF file or a Hugging Face style directory."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .gguf_file import GGUFFile
from .model import Llama, LlamaConfig
from .model_files import default_model_path
from .tokenizer import LlamaTokenizer


@dataclass
class LoadedModel:
    name: str
    model: Llama
    tokenizer: LlamaTokenizer


def load(
    path: str | Path | None = None,
    *,
    max_seq_len: int = 2048,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    weights: str = "full",
) -> LoadedModel:
    """A GGUF file or a directory with ``config.json``, ``*.safetensors`` and ``tokenizer.json``.

    Weights are dequantised to float32; ``dtype`` then sets the matrices' type (see ``Llama.cast_weights``),
    and ``weights`` (``full``, ``int8``, ``int4``) what decode steps read (see ``Llama.quantize``).
    """
    path = Path(path) if path is not None else default_model_path()
    if path.is_dir():
        config, tensors, tokenizer = _read_hf(path, max_seq_len)
    elif path.is_file():
        config, tensors, tokenizer = _read_gguf(path, max_seq_len)
    else:
        raise FileNotFoundError(f"no model at {path}")
    with torch.device("meta"):
        model = Llama(config)
    model = model.to_empty(device=device)
    state = _fuse(dict(_progress(tensors, total=len(model.state_dict()), desc=f"loading {path.name}")))
    if config.tie_embeddings:
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{path}: weights missing for {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=True, assign=False)
    model.rope_cos, model.rope_sin = (t.to(device) for t in _rope(config))
    model.eval().requires_grad_(False)
    if weights != "full":
        model.quantize(weights)  # from the float32 weights
    if dtype != torch.float32:
        model.cast_weights(dtype)
    model.prepare_decode()
    return LoadedModel(path.stem, model, tokenizer)


def _fuse(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack Q, K, V (and gate, up) into the single matrices the model multiplies by."""
    for name in [n for n in state if n.endswith(".attention.wq.weight")]:
        prefix = name.removesuffix("wq.weight")
        parts = [state.pop(prefix + p) for p in ("wq.weight", "wk.weight", "wv.weight")]
        state[prefix + "wqkv.weight"] = torch.cat(parts)
    for name in [n for n in state if n.endswith(".feed_forward.w1.weight")]:
        prefix = name.removesuffix("w1.weight")
        state[prefix + "w13.weight"] = torch.cat([state.pop(prefix + "w1.weight"), state.pop(prefix + "w3.weight")])
    return state


def _rope(config: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from .rope import rope_tables

    return rope_tables(config.head_dim, config.max_seq_len, config.rope_base)


def _progress(items: Iterator[tuple[str, torch.Tensor]], total: int, desc: str) -> Iterator[tuple[str, torch.Tensor]]:
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return iter(tqdm(items, total=total, desc=desc, unit="tensor", leave=False))


def _read_gguf(path: Path, max_seq_len: int) -> tuple[LlamaConfig, Iterator[tuple[str, torch.Tensor]], LlamaTokenizer]:
    f = GGUFFile(path)
    meta = f.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path.name}: architecture {arch!r} is not supported (only 'llama')")
    tokens = meta.get("tokenizer.ggml.tokens", [])
    config = LlamaConfig(
        vocab_size=int(meta.get("llama.vocab_size", len(tokens))),
        dim=int(meta["llama.embedding_length"]),
        n_layers=int(meta["llama.block_count"]),
        n_heads=int(meta["llama.attention.head_count"]),
        n_kv_heads=int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"])),
        ffn_dim=int(meta["llama.feed_forward_length"]),
        rope_base=float(meta.get("llama.rope.freq_base", 10000.0)),
        norm_eps=float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=min(max_seq_len, int(meta.get("llama.context_length", max_seq_len))),
        tie_embeddings="output.weight" not in f.tensors,
    )
    return config, _gguf_weights(f, config), LlamaTokenizer.from_gguf_metadata(meta)


GGUF_NAMES = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
}


def _gguf_weights(f: GGUFFile, config: LlamaConfig) -> Iterator[tuple[str, torch.Tensor]]:
    for name in f.tensors:
        array = f.tensor(name)
        if name.startswith("blk."):
            _, layer, kind, _ = name.split(".")
            if kind == "attn_q":
                array = _unpermute(array, config.n_heads)
            elif kind == "attn_k":
                array = _unpermute(array, config.n_kv_heads)
            ours = f"layers.{layer}.{GGUF_NAMES[kind]}.weight"
        else:
            ours = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight"}.get(
                name, "output.weight" if name == "output.weight" else name
            )
        yield ours, torch.from_numpy(array)
    f.close()


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp interleaves each head's rotary pairs; go back to the half-split layout."""
    out, dim = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, dim).swapaxes(1, 2).reshape(out, dim)


HF_NAMES = {
    "input_layernorm": "attention_norm",
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
}


def _read_hf(path: Path, max_seq_len: int) -> tuple[LlamaConfig, Iterator[tuple[str, torch.Tensor]], LlamaTokenizer]:
    cfg: dict[str, Any] = json.loads((path / "config.json").read_text())
    archs = cfg.get("architectures") or [cfg.get("model_type")]
    if "LlamaForCausalLM" not in archs and cfg.get("model_type") != "llama":
        raise ValueError(f"{path.name}: architecture {archs[0]!r} is not supported (only LlamaForCausalLM)")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    config = LlamaConfig(
        vocab_size=int(cfg["vocab_size"]),
        dim=int(cfg["hidden_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=int(cfg["num_attention_heads"]),
        n_kv_heads=int(cfg.get("num_key_value_heads", cfg["num_attention_heads"])),
        ffn_dim=int(cfg["intermediate_size"]),
        rope_base=float(cfg.get("rope_theta", 10000.0)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_seq_len=min(max_seq_len, int(cfg.get("max_position_embeddings", max_seq_len))),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    return config, _hf_weights(files), LlamaTokenizer.from_hf_dir(path)


def _hf_weights(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors.torch import load_file

    for file in files:
        for name, tensor in load_file(str(file)).items():
            tensor = tensor.float()
            if name == "model.embed_tokens.weight":
                yield "tok_embeddings.weight", tensor
            elif name == "model.norm.weight":
                yield "norm.weight", tensor
            elif name == "lm_head.weight":
                yield "output.weight", tensor
            elif name.startswith("model.layers."):
                _, _, layer, rest = name.split(".", 3)
                yield f"layers.{layer}.{HF_NAMES[rest.removesuffix('.weight')]}.weight", tensor
