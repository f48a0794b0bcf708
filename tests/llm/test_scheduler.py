from __future__ import annotations

import pytest

from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.scheduler import Chunk, Scheduler, SchedulerConfig, Step
from blazerpc.llm.sequence import SeqState, Sequence


def seq(n: int, first: int = 0) -> Sequence:
    return Sequence(list(range(first, first + n)), SamplingParams())


def run_step(sched: Scheduler, step: Step) -> None:
    """What the runner and engine do to a step's sequences: cache the computed tokens, sample."""
    for s in step.decode:
        s.num_cached = s.num_tokens
    for chunk in step.prefill:
        chunk.seq.num_cached = chunk.start + chunk.length
    for s in step.decode + [chunk.seq for chunk in step.prefill]:
        sched.blocks.publish(s)
    for s in step.sampled:
        s.output_ids.append(7)


def test_newcomers_prefill_while_running_sequences_decode() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=4), BlockManager(64, 4))
    a = seq(5)
    sched.add(a)
    step = sched.schedule()
    assert step == Step([], [Chunk(a, 0, 5)]) and a.state is SeqState.RUNNING and step.sampled == [a]
    run_step(sched, step)
    b, c = seq(3, first=10), seq(4, first=20)
    sched.add(b)
    sched.add(c)
    step = sched.schedule()
    assert step.decode == [a] and step.prefill == [Chunk(b, 0, 3), Chunk(c, 0, 4)]
    assert step.sampled == [a, b, c]


def test_max_num_seqs_limits_admission_and_the_budget_cuts_prompts_into_chunks() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=10), BlockManager(64, 4))
    seqs = [seq(6, first=10 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    step = sched.schedule()
    assert step.prefill == [Chunk(seqs[0], 0, 6), Chunk(seqs[1], 0, 4)]  # the second starts with what is left
    assert step.sampled == [seqs[0]]
    run_step(sched, step)
    step = sched.schedule()
    assert step.decode == [seqs[0]] and step.prefill == [Chunk(seqs[1], 4, 2)]
    assert list(sched.waiting) == [seqs[2]]  # max_num_seqs reached


def test_decoding_sequences_take_one_token_each_of_the_budget_and_prompts_the_rest() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=10), BlockManager(64, 4))
    running = [seq(2, first=10 * i) for i in range(3)]
    for s in running:
        sched.add(s)
    run_step(sched, sched.schedule())  # 6 prompt tokens: all three prefilled
    long = seq(20, first=100)
    sched.add(long)
    step = sched.schedule()
    assert step.decode == running and step.prefill == [Chunk(long, 0, 7)]  # 10 - 3 decode tokens
    run_step(sched, step)
    sched.finish(running[0])
    step = sched.schedule()
    assert step.decode == running[1:] and step.prefill == [Chunk(long, 7, 8)]
    assert len(step.decode) + sum(c.length for c in step.prefill) == 10


def test_the_budget_must_cover_a_step_where_every_sequence_decodes() -> None:
    with pytest.raises(ValueError, match=r"max_num_batched_tokens \(16\) must be >= max_num_seqs \(32\)"):
        SchedulerConfig(max_num_seqs=32, max_num_batched_tokens=16)
    with pytest.raises(ValueError, match="max_num_batched_tokens must be >= 1"):
        SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=0)


def test_a_long_prompt_is_prefilled_in_chunks_while_running_sequences_keep_decoding() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=9), BlockManager(64, 4))
    short = seq(3)
    sched.add(short)
    run_step(sched, sched.schedule())
    long = seq(30, first=100)
    sched.add(long)
    chunks = []
    while not long.output_ids:
        step = sched.schedule()
        assert step.decode == [short]  # every step, the running sequence decodes
        chunks += [(c.start, c.length) for c in step.prefill]
        run_step(sched, step)
    assert chunks == [(0, 8), (8, 8), (16, 8), (24, 6)]
    assert len(long.block_table) == 8  # every block was held from the first chunk on


def test_a_cached_prefix_is_skipped_and_only_the_rest_is_prefilled() -> None:
    sched = Scheduler(SchedulerConfig(), BlockManager(64, 4))
    first = seq(10)
    sched.add(first)
    run_step(sched, sched.schedule())
    second = Sequence([*range(9), 55, 56], SamplingParams())  # shares two full blocks
    sched.add(second)
    step = sched.schedule()
    assert step.prefill == [Chunk(second, 8, 3)] and step.sampled == [first, second]


def test_a_full_cache_preempts_the_newest_sequence_and_it_resumes_later() -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    sched = Scheduler(SchedulerConfig(), bm)
    a, b = seq(4), seq(4, first=10)
    sched.add(a)
    sched.add(b)
    run_step(sched, sched.schedule())  # both prefilled: 1 block each, now 5 tokens each
    step = sched.schedule()  # each needs a second block; only one is free
    assert step == Step([a], [])
    assert b.state is SeqState.WAITING and b.block_table == [] and b.num_cached == 0 and sched.waiting[0] is b
    run_step(sched, step)
    sched.finish(a)
    assert bm.num_free == 3
    step = sched.schedule()
    assert step.prefill == [Chunk(b, 4, 1)]  # re-prefilled: its own published block is a hit
    assert b.num_tokens == 5


def test_finish_frees_blocks_at_once_from_running_or_waiting() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    sched = Scheduler(SchedulerConfig(max_num_seqs=1), bm)
    a, b = seq(4), seq(4)
    sched.add(a)
    sched.add(b)
    sched.schedule()
    sched.finish(a)
    sched.finish(b)
    assert bm.num_free == 8 and sched.num_seqs == 0 and a.state is SeqState.FINISHED
