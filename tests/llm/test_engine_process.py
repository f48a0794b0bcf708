"""``EngineLoop``: typed commands in, one list of typed events out per step (a real pipe, the tiny model)."""

from __future__ import annotations

import threading
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from blazerpc import Status
from blazerpc.llm.config import EngineConfig
from blazerpc.llm.engine import LLMEngine
from blazerpc.llm.engine_process import EngineLoop
from blazerpc.llm.loader import LoadedModel
from blazerpc.llm.params import SamplingParams
from blazerpc.llm.protocol import (
    AbortRequest,
    AddRequest,
    EngineStats,
    RequestFailed,
    Shutdown,
    StatsRequest,
    TokenEvent,
)

GREEDY = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)


def events_until(conn: Connection, done: Any) -> list[Any]:
    """Every event the loop sends until ``done(event)`` is true for one."""
    seen: list[Any] = []
    while not seen or not done(seen[-1]):
        assert conn.poll(30), "the engine loop went quiet"
        seen.extend(conn.recv())
    return seen


def test_the_loop_runs_requests_refuses_bad_ones_and_reports_stats(tiny: LoadedModel) -> None:
    engine = LLMEngine(tiny, EngineConfig(kv_cache_mb=16, max_model_len=64, block_size=8))
    ours, theirs = Pipe()
    loop = threading.Thread(target=EngineLoop(theirs, engine).run)
    loop.start()
    try:
        ours.send(AddRequest(seq_id=1, prompt_ids=[1, 2, 3], params=GREEDY))
        ours.send(AddRequest(seq_id=2, prompt_ids=list(range(100)), params=GREEDY))  # longer than the context
        events = events_until(ours, lambda e: isinstance(e, TokenEvent) and e.finish_reason is not None)
        tokens = [e for e in events if isinstance(e, TokenEvent)]
        assert [e.seq_id for e in tokens] == [1] * 4 and tokens[-1].finish_reason == "length"
        [failed] = [e for e in events if isinstance(e, RequestFailed)]
        assert failed.seq_id == 2 and failed.status is Status.INVALID_ARGUMENT and "no room" in failed.message

        ours.send(AddRequest(seq_id=3, prompt_ids=[4, 5], params=SamplingParams(max_tokens=500, ignore_eos=True)))
        events_until(ours, lambda e: isinstance(e, TokenEvent))
        ours.send(AbortRequest(seq_id=3))
        ours.send(StatsRequest())
        stats = events_until(ours, lambda e: isinstance(e, EngineStats))[-1]
        assert stats == engine.stats() and (stats.seqs, stats.free_blocks) == (0, engine.blocks.num_blocks)
        ours.send(Shutdown())
        loop.join(10)
        assert not loop.is_alive()
    finally:
        ours.close()
        loop.join(10)


def test_the_loop_ends_when_the_server_side_of_the_pipe_closes(tiny: LoadedModel) -> None:
    ours, theirs = Pipe()
    loop = threading.Thread(
        target=EngineLoop(theirs, LLMEngine(tiny, EngineConfig(kv_cache_mb=16, max_model_len=64))).run
    )
    loop.start()
    ours.close()
    loop.join(10)
    assert not loop.is_alive()
