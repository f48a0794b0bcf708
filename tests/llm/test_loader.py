"""Both loaders on the same tiny weights: a Hugging Face directory and a GGUF file written here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from blazerpc.llm.engine import EngineConfig, LLMEngine
from blazerpc.llm.loader import load
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.tokenizer import LlamaTokenizer
from tests.llm_fixtures import TINY, tiny_weights, write_tiny_hf


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Q and K (interleaved rotary pairs)."""
    out, dim = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, dim).swapaxes(1, 2).reshape(out, dim)


def write_tiny_gguf(path: Path, tokenizer: LlamaTokenizer, quant: gguf.GGMLQuantizationType) -> Path:
    vocab = tokenizer.vocab_size
    weights = {k: v.numpy() for k, v in tiny_weights(vocab).items()}
    heads, kv_heads = TINY["num_attention_heads"], TINY["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(TINY["num_hidden_layers"])
    writer.add_context_length(512)
    writer.add_embedding_length(TINY["hidden_size"])
    writer.add_feed_forward_length(TINY["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list([tokenizer.tokenizer.id_to_token(i) for i in range(vocab)])
    specials = {t.content for t in tokenizer.tokenizer.get_added_tokens_decoder().values()}
    writer.add_token_types([3 if tokenizer.tokenizer.id_to_token(i) in specials else 1 for i in range(vocab)])
    model = json.loads(tokenizer.tokenizer.to_str())["model"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in model["merges"]])
    writer.add_eos_token_id(2)
    writer.add_bos_token_id(1)
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
    for name, w in weights.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            kind = names[rest.removesuffix(".weight")]
            w = permute(w, heads) if kind == "attn_q" else permute(w, kv_heads) if kind == "attn_k" else w
            gname = f"blk.{layer}.{kind}.weight"
        if w.ndim == 2 and quant != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gname, gguf.quants.quantize(w, quant), raw_dtype=quant)
        else:
            writer.add_tensor(gname, w.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def greedy(path: Path, prompt: str = "The capital of France is") -> list[int]:
    loaded = load(path, max_seq_len=512)
    engine = LLMEngine(loaded, EngineConfig(kv_cache_mb=8, max_model_len=512))
    events = engine.generate(
        loaded.tokenizer.encode(prompt), SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    )
    return [e.token_id for e in events]


def test_gguf_and_hf_loaders_give_the_same_model(
    tmp_path: Path, tiny_dir: Path, default_tokenizer: LlamaTokenizer
) -> None:
    f32 = write_tiny_gguf(tmp_path / "tiny-f32.gguf", default_tokenizer, gguf.GGMLQuantizationType.F32)
    hf, from_gguf = load(tiny_dir, max_seq_len=512), load(f32, max_seq_len=512)
    assert from_gguf.model.config.norm_eps == pytest.approx(hf.model.config.norm_eps)  # GGUF stores a float32
    assert dataclasses.replace(from_gguf.model.config, norm_eps=hf.model.config.norm_eps) == hf.model.config
    for (name, a), (_, b) in zip(hf.model.state_dict().items(), from_gguf.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # Q and K un-permuted back exactly
    assert from_gguf.tokenizer.encode("héllo 2024 <|im_end|>") == hf.tokenizer.encode("héllo 2024 <|im_end|>")
    assert greedy(tiny_dir) == greedy(f32)


Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("quant", [Q.Q8_0, Q.Q4_0])
def test_quantized_gguf_is_dequantized_on_load(
    tmp_path: Path, tiny_dir: Path, default_tokenizer: LlamaTokenizer, quant: gguf.GGMLQuantizationType
) -> None:
    path = write_tiny_gguf(tmp_path / f"tiny-{quant.name}.gguf", default_tokenizer, quant)
    hf, q = load(tiny_dir, max_seq_len=512), load(path, max_seq_len=512)
    a = hf.model.layers[0].feed_forward.w13.weight
    b = q.model.layers[0].feed_forward.w13.weight
    error = ((a - b).abs().mean() / a.abs().mean()).item()
    assert 0 < error < (0.02 if quant == gguf.GGMLQuantizationType.Q8_0 else 0.15)


def test_unsupported_architectures_are_refused_by_name(tmp_path: Path, default_tokenizer: LlamaTokenizer) -> None:
    hf = write_tiny_hf(tmp_path / "mistral", default_tokenizer, architecture="Qwen2ForCausalLM")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    with pytest.raises(ValueError, match="architecture 'Qwen2ForCausalLM' is not supported"):
        load(hf)
    writer = gguf.GGUFWriter(str(tmp_path / "phi.gguf"), "phi3")
    writer.add_tensor("x", np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="architecture 'phi3' is not supported"):
        load(tmp_path / "phi.gguf")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing-here.gguf")
