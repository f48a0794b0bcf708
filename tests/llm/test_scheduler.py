from __future__ import annotations

from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.scheduler import Scheduler, SchedulerConfig
from blazerpc.llm.sequence import SeqState, Sequence


def seq(n: int) -> Sequence:
    return Sequence(list(range(n)), SamplingParams())


def run_step(decode: list[Sequence], prefill: list[Sequence]) -> None:
    """What the runner and engine do to a step's sequences: cache them, add one token."""
    for s in decode + prefill:
        s.num_cached = s.num_tokens
        s.output_ids.append(7)


def test_newcomers_prefill_while_running_sequences_decode() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=4), BlockManager(64, 4))
    a = seq(5)
    sched.add(a)
    decode, prefill = sched.schedule()
    assert (decode, prefill) == ([], [a]) and a.state is SeqState.RUNNING
    run_step(decode, prefill)
    b, c = seq(3), seq(4)
    sched.add(b)
    sched.add(c)
    decode, prefill = sched.schedule()
    assert decode == [a] and prefill == [b, c]


def test_max_num_seqs_and_prefill_budget_limit_admission() -> None:
    sched = Scheduler(SchedulerConfig(max_num_seqs=2, max_prefill_tokens=10), BlockManager(64, 4))
    seqs = [seq(6), seq(6), seq(6)]
    for s in seqs:
        sched.add(s)
    _, prefill = sched.schedule()
    assert prefill == [seqs[0]]  # the second would pass the 10-token budget
    run_step([], prefill)
    _, prefill = sched.schedule()
    assert prefill == [seqs[1]]
    run_step([], prefill)
    _, prefill = sched.schedule()
    assert prefill == [] and list(sched.waiting) == [seqs[2]]  # max_num_seqs reached
    long = seq(50)
    sched2 = Scheduler(SchedulerConfig(max_prefill_tokens=10), BlockManager(64, 4))
    sched2.add(long)
    assert sched2.schedule()[1] == [long]  # a prompt over the budget still runs, alone


def test_a_full_cache_preempts_the_newest_sequence_and_it_resumes_later() -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    sched = Scheduler(SchedulerConfig(), bm)
    a, b = seq(4), seq(4)
    sched.add(a)
    sched.add(b)
    run_step(*sched.schedule())  # both prefilled: 1 block each, now 5 tokens each
    decode, prefill = sched.schedule()  # each needs a second block; only one is free
    assert decode == [a] and prefill == []
    assert b.state is SeqState.WAITING and b.block_table == [] and b.num_cached == 0 and sched.waiting[0] is b
    run_step(decode, prefill)
    sched.finish(a)
    assert bm.num_free == 3
    decode, prefill = sched.schedule()
    assert prefill == [b] and b.num_tokens == 5  # re-prefilled with its generated token


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
