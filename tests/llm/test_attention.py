"""Attention over the paged cache, through the model: chunks, decode steps, mixed steps, both paths."""

from __future__ import annotations

import pytest
import torch

from blazerpc.llm.attention import Attention
from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.loader import LoadedModel
from blazerpc.llm.model import Llama
from blazerpc.llm.runner import ModelRunner
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.scheduler import Chunk, Step
from blazerpc.llm.sequence import Sequence
from tests.llm.test_model import decode_logits, full_logits


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
