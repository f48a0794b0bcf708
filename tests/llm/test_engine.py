"""The engine on a tiny random-weight model: batching must not change what a request gets."""

from __future__ import annotations

import pytest

from blazerpc import BlazeError, Status
from blazerpc.llm.engine import EngineConfig, LLMEngine, TokenEvent
from blazerpc.llm.loader import LoadedModel
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.sequence import Sequence

PROMPTS = [f"Request number {i} asks about {topic}" for i, topic in enumerate(["cats", "dogs", "tea", "rain"] * 4)]


def engine(tiny: LoadedModel, **config: int | bool) -> LLMEngine:
    return LLMEngine(tiny, EngineConfig(**{"kv_cache_mb": 16, "max_model_len": 512, "block_size": 8, **config}))


def run_all(eng: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list[list[TokenEvent]]:
    outputs: list[list[TokenEvent]] = [[] for _ in requests]
    for out, (ids, params) in zip(outputs, requests, strict=True):
        eng.add(Sequence(ids, params), out.append)
    while eng.has_work:
        eng.step()
    return outputs


def tokens(outputs: list[list[TokenEvent]]) -> list[list[int]]:
    return [[e.token_id for e in out] for out in outputs]


def test_greedy_output_is_the_same_alone_or_in_a_batch_of_16(tiny: LoadedModel) -> None:
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    requests = [(tiny.tokenizer.encode(p), params) for p in PROMPTS]
    alone = [[e.token_id for e in engine(tiny).generate(ids, p)] for ids, p in requests]
    batched = [[e.token_id for e in out] for out in run_all(engine(tiny), requests)]
    assert batched == alone


def test_newcomers_join_a_running_batch_and_get_the_same_tokens(tiny: LoadedModel) -> None:
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    ids = [tiny.tokenizer.encode(p) for p in PROMPTS[:6]]
    alone = [[e.token_id for e in engine(tiny).generate(i, params)] for i in ids]
    eng = engine(tiny)
    outputs: list[list[TokenEvent]] = [[] for _ in ids]
    sizes = []
    for k, (i, out) in enumerate(zip(ids, outputs, strict=True)):
        eng.add(Sequence(i, params), out.append)
        sizes.append(eng.step())  # one more joins at every step
        assert sizes[-1] == k + 1
    while eng.has_work:
        eng.step()
    assert [[e.token_id for e in out] for out in outputs] == alone
    assert [e.prefill for e in outputs[3]][:2] == [True, False]


def test_preemption_under_a_small_cache_keeps_outputs_unchanged(tiny: LoadedModel) -> None:
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    requests = [(tiny.tokenizer.encode(p), params) for p in PROMPTS[:6]]
    roomy = run_all(engine(tiny, prefix_caching=False), requests)
    eng = engine(tiny, kv_cache_mb=1, max_model_len=128)  # ~170 slots for 6 x ~48 tokens: must preempt
    tight = run_all(eng, requests)
    assert [[e.token_id for e in o] for o in tight] == [[e.token_id for e in o] for o in roomy]
    assert eng.blocks.num_free == eng.blocks.num_blocks
    # a preempted sequence is prefilled again, but only a stream's first event says "prefill"
    assert all([e.prefill for e in o] == [True] + [False] * (len(o) - 1) for o in tight)


def test_aborted_and_finished_sequences_free_every_block(tiny: LoadedModel) -> None:
    eng = engine(tiny)
    params = SamplingParams(max_tokens=1000, temperature=1.0, ignore_eos=True)
    seqs = [Sequence(tiny.tokenizer.encode(p), params) for p in PROMPTS]
    for s in seqs:
        eng.add(s, lambda e: None)
    for _ in range(3):
        eng.step()
    assert eng.blocks.num_free < eng.blocks.num_blocks
    for s in seqs:
        eng.abort(s.seq_id)
    assert not eng.has_work and eng.scheduler.num_seqs == 0
    assert eng.blocks.num_free == eng.blocks.num_blocks


def test_stream_text_equals_decoded_text_and_limits_end_generation(tiny: LoadedModel) -> None:
    eng = engine(tiny)
    ids = tiny.tokenizer.encode("Once upon a time")
    events = eng.generate(ids, SamplingParams(max_tokens=30, temperature=1.0, seed=7, ignore_eos=True))
    assert len(events) == 30 and events[-1].finish_reason == "length"
    assert "".join(e.text for e in events) == tiny.tokenizer.decode(e.token_id for e in events)
    again = eng.generate(ids, SamplingParams(max_tokens=30, temperature=1.0, seed=7, ignore_eos=True))
    assert [e.token_id for e in again] == [e.token_id for e in events]  # same seed, same output


def test_stop_strings_end_generation_and_are_never_emitted(tiny: LoadedModel) -> None:
    eng = engine(tiny)
    ids = tiny.tokenizer.encode("Once upon a time")
    free = eng.generate(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
    text = "".join(e.text for e in free)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip()
    events = eng.generate(ids, SamplingParams(max_tokens=30, temperature=0, stop=(stop,), ignore_eos=True))
    out = "".join(e.text for e in events)
    assert events[-1].finish_reason == "stop"
    assert stop not in out and out == text[: text.index(stop)]


def test_a_prompt_that_fills_the_context_is_refused_and_leaves_nothing(tiny: LoadedModel) -> None:
    eng = engine(tiny, max_model_len=16)
    with pytest.raises(BlazeError, match="leaves no room") as caught:
        eng.add(Sequence(list(range(20)), SamplingParams()), lambda e: None)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert not eng.has_work and eng.scheduler.num_seqs == 0


def test_prefix_cache_hits_give_the_tokens_a_cold_cache_gives(tiny: LoadedModel) -> None:
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    shared = tiny.tokenizer.encode("You are a careful assistant. Answer briefly and cite nothing. " * 4)
    first = shared + tiny.tokenizer.encode(" Question: why is the sky blue?")
    answer = [e.token_id for e in engine(tiny).generate(first, params)]
    one_by_one = [
        first,  # the whole prompt again: every full block but the last token's
        shared[:37],  # a prefix that ends mid-block
        first + answer + tiny.tokenizer.encode(" And at night?"),  # the next turn: prompt and answer hit
        *(shared + tiny.tokenizer.encode(f" Question {i}: {topic}?") for i, topic in enumerate(["tea", "rain"])),
    ]
    batch = [shared + tiny.tokenizer.encode(f" Question {i} about {p}") for i, p in enumerate(PROMPTS[:6])]
    warm, cold = engine(tiny, block_size=8), engine(tiny, block_size=8, prefix_caching=False)
    for eng in (warm, cold):
        eng.generate(first, params)
    for ids in one_by_one:
        assert tokens([warm.generate(ids, params)]) == tokens([cold.generate(ids, params)])
    assert tokens(run_all(warm, [(ids, params) for ids in batch])) == tokens(
        run_all(cold, [(ids, params) for ids in batch])
    )
    stats = warm.blocks.stats
    assert stats.hits >= len(first) // 8 * 8 + len(shared) // 8 * 8 * 8 and cold.blocks.stats.hits == 0
    assert warm.blocks.num_free == warm.blocks.num_blocks  # cached blocks are free to take


def test_a_long_prompt_prefilled_in_chunks_gives_the_same_tokens_and_the_others_keep_decoding(
    tiny: LoadedModel,
) -> None:
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    running = [(tiny.tokenizer.encode(p), params) for p in PROMPTS[:3]]
    long = tiny.tokenizer.encode(" ".join(PROMPTS) * 2)  # ~250 tokens
    reference = engine(tiny, prefix_caching=False)
    chunked = engine(tiny, prefix_caching=False, max_num_batched_tokens=32)
    results, prefill_steps = [], []
    for eng in (reference, chunked):
        outputs: list[list[TokenEvent]] = [[] for _ in range(4)]
        for out, (ids, p) in zip(outputs[:3], running, strict=True):
            eng.add(Sequence(ids, p), out.append)
        eng.step()
        eng.add(Sequence(long, params), outputs[3].append)
        prefill_steps.append(0)
        while not outputs[3]:
            prefill_steps[-1] += 1
            before = [len(out) for out in outputs[:3]]
            eng.step()
            assert [len(out) for out in outputs[:3]] == [n + 1 for n in before]  # nobody waits for the prefill
        while eng.has_work:
            eng.step()
        results.append(tokens(outputs))
    assert results[0] == results[1]
    budgets = [EngineConfig().max_num_batched_tokens, 32]
    assert prefill_steps == [-(-len(long) // (budget - 3)) for budget in budgets]  # 3 decode tokens a step
