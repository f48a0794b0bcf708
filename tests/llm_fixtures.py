"""LLM fixtures: a tiny random-weight Llama with the default model's tokenizer (a Hugging Face
directory), and ``blaze llm`` serving the default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blazerpc.llm.gguf_file import GGUFFile
from blazerpc.llm.loader import LoadedModel, load
from blazerpc.llm.model_files import default_model_path
from blazerpc.llm.tokenizer import LlamaTokenizer
from tests.conftest import blaze, free_port, wait_http_ready

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128}  # fmt: skip


@pytest.fixture(scope="session")
def default_tokenizer() -> LlamaTokenizer:
    f = GGUFFile(default_model_path())
    try:
        return LlamaTokenizer.from_gguf_metadata(f.metadata)
    finally:
        f.close()


def tiny_weights(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, ffn, layers = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    kv = d // TINY["num_attention_heads"] * TINY["num_key_value_heads"]

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.5

    weights = {"model.embed_tokens.weight": w(vocab, d), "model.norm.weight": 1 + 0.1 * w(d)}
    for i in range(layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": 1 + 0.1 * w(d),
            p + "post_attention_layernorm.weight": 1 + 0.1 * w(d),
            p + "self_attn.q_proj.weight": w(d, d) / d**0.5,
            p + "self_attn.k_proj.weight": w(kv, d) / d**0.5,
            p + "self_attn.v_proj.weight": w(kv, d) / d**0.5,
            p + "self_attn.o_proj.weight": w(d, d) / d**0.5,
            p + "mlp.gate_proj.weight": w(ffn, d) / d**0.5,
            p + "mlp.up_proj.weight": w(ffn, d) / d**0.5,
            p + "mlp.down_proj.weight": w(d, ffn) / ffn**0.5,
        }
    return weights


def write_tiny_hf(
    path: Path, tokenizer: LlamaTokenizer, architecture: str = "LlamaForCausalLM", context: int = 512
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer.vocab_size
    config = {"architectures": [architecture], "model_type": "llama", "vocab_size": vocab, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "max_position_embeddings": context, "tie_word_embeddings": True,
              **TINY}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(tokenizer.tokenizer.to_str())
    (path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "chat_template": tokenizer.chat_template})
    )
    save_file(tiny_weights(vocab), str(path / "model.safetensors"))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, default_tokenizer: LlamaTokenizer) -> Path:
    return write_tiny_hf(tmp_path_factory.mktemp("tiny") / "tiny-llama", default_tokenizer)


@pytest.fixture(scope="session")
def tiny_long_dir(tmp_path_factory: pytest.TempPathFactory, default_tokenizer: LlamaTokenizer) -> Path:
    """The tiny model with a 32k context: requests that run for seconds."""
    return write_tiny_hf(tmp_path_factory.mktemp("tiny-long") / "tiny-llama", default_tokenizer, context=32768)


@pytest.fixture
def tiny(tiny_dir: Path) -> LoadedModel:
    return load(tiny_dir, max_seq_len=512)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[tuple[int, int]]:
    """``blaze llm`` with the real default model, as the README's first command starts it."""
    http_port, grpc_port = free_port(), free_port()
    proc = blaze("llm", "--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port))
    try:
        wait_http_ready(http_port, timeout=120)
        yield http_port, grpc_port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
