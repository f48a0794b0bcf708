"""The forward pass on a tiny random-weight model: paged decode, and bfloat16 weights."""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.device import DTYPES, native_bf16, torch_dtype
from blazerpc.llm.engine import EngineConfig, LLMEngine
from blazerpc.llm.linear import Linear
from blazerpc.llm.loader import LoadedModel, load
from blazerpc.llm.model import Attention, AttentionBatch, KVCache, Llama, PrefillSpan
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


def test_a_prompt_prefilled_in_chunks_over_its_cached_prefix_matches_one_prefill(tiny: LoadedModel) -> None:
    ids = tiny.tokenizer.encode("A prompt long enough to cut in chunks that do not end on block edges, twice over")
    blocks = BlockManager(num_blocks=64, block_size=4)
    runner = ModelRunner(tiny.model, blocks)
    seq = Sequence(list(ids), SamplingParams())
    blocks.allocate(seq)
    rows = []
    for start, stop in [(0, 5), (5, 6), (6, 13), (13, len(ids))]:  # 1-token and mid-block chunks too
        rows.append(runner.run(Step(prefill=[Chunk(seq, start, stop - start)])))
    assert [len(r) for r in rows] == [0, 0, 0, 1] and seq.num_cached == len(ids)
    torch.testing.assert_close(rows[-1][0], full_logits(tiny.model, ids)[-1], atol=1e-4, rtol=1e-4)


def use_torch_attention(model: Llama) -> None:
    """Attention in torch operators only, as where the native kernels cannot be built."""
    model.paged_prefill = False
    for attention in (m for m in model.modules() if isinstance(m, Attention)):
        attention.paged_decode = attention.fused_decode = None


@pytest.mark.parametrize("native_attention", [True, False], ids=["kernel", "torch-ops"])
def test_paged_decode_steps_match_a_full_recompute(tiny: LoadedModel, native_attention: bool) -> None:
    if native_attention and not tiny.model.paged_prefill:
        pytest.skip("the native kernels could not be built here")
    if not native_attention:
        use_torch_attention(tiny.model)
    prompts = [tiny.tokenizer.encode(text) for text in ["A short one", "A somewhat longer prompt about the sea"]]
    decoded = decode_logits(tiny, prompts, steps=9)
    for ids, steps in zip(prompts, decoded, strict=True):
        generated = [int(row.argmax()) for row in steps[:-1]]
        reference = full_logits(tiny.model, ids + generated)[len(ids) - 1 :]
        torch.testing.assert_close(torch.stack(steps), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("native_attention", [True, False], ids=["kernel", "torch-ops"])
def test_a_step_of_decode_rows_and_prompt_chunks_matches_full_recomputes(
    tiny: LoadedModel, native_attention: bool
) -> None:
    """Whole prompts, chunks over a cached head (long and short) and a decode row in one step."""
    if native_attention and not tiny.model.paged_prefill:
        pytest.skip("the native kernels could not be built here")
    if not native_attention:
        use_torch_attention(tiny.model)
    texts = [
        "A decoding sequence",
        "Short one",
        "A prompt that comes whole in one chunk of this step, a long one",
        "Cached head, then a tail",
        "Cached head, then a tail that runs on and on for more than two blocks",
    ]
    prompts = [tiny.tokenizer.encode(text) for text in texts]
    assert len(prompts[2]) > 8 and len(prompts[4]) > len(prompts[3]) + 8  # groups of 8 rows and more
    blocks = BlockManager(num_blocks=64, block_size=4)
    runner = ModelRunner(tiny.model, blocks)
    seqs = [Sequence(list(ids), SamplingParams()) for ids in prompts]
    for seq in seqs:
        blocks.allocate(seq)
    runner.run(Step(prefill=[Chunk(seqs[0], 0, len(prompts[0])), Chunk(seqs[3], 0, 6), Chunk(seqs[4], 0, 6)]))
    seqs[0].output_ids.append(7)
    blocks.append(seqs[0])
    chunks = [Chunk(seqs[2], 0, len(prompts[2])), Chunk(seqs[1], 0, len(prompts[1]))]
    chunks += [Chunk(seq, 6, len(ids) - 6) for seq, ids in zip(seqs[3:], prompts[3:], strict=True)]
    rows = runner.run(Step(decode=[seqs[0]], prefill=chunks))
    expected = [[*prompts[0], 7], prompts[2], prompts[1], prompts[3], prompts[4]]  # as step.sampled orders them
    assert len(rows) == len(expected)
    for row, ids in zip(rows, expected, strict=True):
        torch.testing.assert_close(row, full_logits(tiny.model, ids)[-1], atol=1e-4, rtol=1e-4)


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
