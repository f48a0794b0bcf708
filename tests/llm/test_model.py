"""The forward pass on a tiny random-weight model: bfloat16 weights, dtypes, the cache size (and helpers)."""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from blazerpc.llm.attention import AttentionBatch, KVCache, PrefillSpan
from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.device import DTYPES, native_bf16, torch_dtype
from blazerpc.llm.engine import EngineConfig, LLMEngine
from blazerpc.llm.linear import Linear
from blazerpc.llm.loader import LoadedModel, load
from blazerpc.llm.model import Llama
from blazerpc.llm.runner import ModelRunner
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.scheduler import Chunk, Step
from blazerpc.llm.sequence import Sequence


@torch.inference_mode()
def full_logits(model: Llama, ids: list[int]) -> torch.Tensor:
    """Logits at every position from one causal pass over ``ids``, with no earlier cache."""
    n = len(ids)
    cache = KVCache(model.config, -(-n // 16), 16, dtype=model.weight_dtype)
    everything = torch.arange(n)
    batch = AttentionBatch(everything // 16, everything % 16, everything, 0, None, None, [PrefillSpan(0, n)])
    logits: torch.Tensor = model(torch.tensor(ids), batch, cache, everything)
    return logits


def decode_logits(loaded: LoadedModel, prompts: list[list[int]], steps: int) -> list[list[torch.Tensor]]:
    """Prefill each prompt, then decode greedily ``steps`` times, all sequences in one batch,
    over a cache whose blocks are handed out in shuffled order (so no sequence is contiguous)."""
    blocks = BlockManager(num_blocks=64, block_size=4)
    shuffled = list(blocks.free)
    random.Random(0).shuffle(shuffled)
    blocks.free = OrderedDict.fromkeys(shuffled)
    runner = ModelRunner(loaded.model, blocks)
    seqs = [Sequence(list(ids), SamplingParams(max_tokens=steps)) for ids in prompts]
    for seq in seqs:
        blocks.allocate(seq)
    rows = runner.run(Step(prefill=[Chunk(seq, 0, seq.num_tokens) for seq in seqs]))
    out: list[list[torch.Tensor]] = [[row] for row in rows]
    for _ in range(steps):
        for seq, got in zip(seqs, out, strict=True):
            seq.output_ids.append(int(got[-1].argmax()))
            blocks.append(seq)
        for got, row in zip(out, runner.run(Step(decode=seqs)), strict=True):
            got.append(row)
    return out


def test_bfloat16_weights_stay_close_to_float32(tiny_dir: Path) -> None:
    f32 = load(tiny_dir, max_seq_len=512)
    bf16 = load(tiny_dir, max_seq_len=512, dtype=torch.bfloat16)
    linears = [m for m in bf16.model.modules() if isinstance(m, Linear)]
    assert {m.weight.dtype for m in linears} == {torch.bfloat16}
    assert bf16.model.norm.weight.dtype == torch.float32  # norms and the residual stream stay float32
    prompt = f32.tokenizer.encode("The weather today")
    reference = torch.stack(decode_logits(f32, [prompt], steps=6)[0])
    reduced = torch.stack(decode_logits(bf16, [prompt], steps=6)[0])
    assert reduced.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(reduced, reference, dim=-1)
    assert cosine.min() > 0.99, cosine


def test_dtype_choice_and_kv_cache_capacity(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="dtype must be auto, float32, bfloat16; got 'float16'"):
        EngineConfig(dtype="float16")
    expected = torch.bfloat16 if native_bf16("cpu") else torch.float32
    assert torch_dtype(EngineConfig(dtype="auto", device="cpu")) == expected
    assert torch_dtype(EngineConfig(dtype="float32")) == torch.float32
    config = EngineConfig(kv_cache_mb=4, max_model_len=256, block_size=8)
    engines = {name: LLMEngine(load(tiny_dir, max_seq_len=512, dtype=dtype), config) for name, dtype in DTYPES.items()}
    assert engines["bfloat16"].runner.cache.k.dtype == torch.bfloat16
    assert engines["bfloat16"].blocks.num_blocks == 2 * engines["float32"].blocks.num_blocks  # same MiB, 2 bytes
