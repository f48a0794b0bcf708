"""``EngineClient`` against a real engine process (the tiny model): stats, abort, death, restart, give-up."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blazerpc import BlazeError, Status
from blazerpc.llm.client import EngineClient, EngineState, RestartPolicy
from blazerpc.llm.config import EngineConfig
from blazerpc.llm.params import SamplingParams
from tests.conftest import until

CONFIG = EngineConfig(kv_cache_mb=16, max_model_len=512, max_num_seqs=4, max_waiting=2)
LONG = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)


@pytest.fixture
async def client(tiny_dir: Path) -> AsyncIterator[EngineClient]:
    states: list[EngineState] = []
    engine = EngineClient(tiny_dir, CONFIG, RestartPolicy(max_restarts=1, backoff_s=0.2), lambda s, _: states.append(s))
    engine.states = states  # type: ignore[attr-defined]
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def idle(engine: EngineClient) -> None:
    """Until the engine process holds no sequence and every KV block is free."""
    for _ in range(500):
        stats = await engine.stats()
        if stats.seqs == 0 and stats.free_blocks == stats.num_blocks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the engine still holds work: {stats}")


async def test_client_streams_a_request_to_its_end(client: EngineClient) -> None:
    events = [e async for e in client.generate([1, 2, 3], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))]
    assert len(events) == 5 and events[0].prefill and not any(e.prefill for e in events[1:])
    assert events[-1].finish_reason == "length" and client.info is not None and client.info.max_len == 512
    await idle(client)


async def test_leaving_a_stream_early_aborts_it_in_the_engine(client: EngineClient) -> None:
    for _ in range(5):
        stream = client.generate([5, 6, 7], LONG)
        await anext(stream)
        await stream.aclose()
    assert client.outstanding == 0
    await idle(client)


async def test_a_request_the_engine_refuses_leaves_nothing_behind(client: EngineClient) -> None:
    with pytest.raises(BlazeError, match="leaves no room") as caught:
        await anext(client.generate(list(range(600)), LONG))
    assert caught.value.status is Status.INVALID_ARGUMENT
    await idle(client)


async def test_requests_beyond_capacity_are_refused_at_once(client: EngineClient) -> None:
    streams = [client.generate([1, 2], LONG) for _ in range(CONFIG.capacity)]
    for stream in streams:
        await anext(stream)
    with pytest.raises(BlazeError, match="the engine is full") as caught:
        await anext(client.generate([1, 2], LONG))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED and caught.value.retry_after
    for stream in streams:
        await stream.aclose()
    await idle(client)


async def test_a_dead_engine_fails_requests_in_flight_and_comes_back(client: EngineClient) -> None:
    stream = client.generate([1, 2, 3], LONG)
    await anext(stream)
    first_pid = client.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(BlazeError, match="the engine process died") as caught:
        async for _ in stream:
            pass
    assert caught.value.status is Status.UNAVAILABLE and "SIGKILL" in caught.value.message
    assert client.state is EngineState.RESTARTING
    with pytest.raises(BlazeError, match="restarting") as refused:
        await anext(client.generate([1], LONG))
    assert refused.value.status is Status.UNAVAILABLE and refused.value.retry_after
    await until(lambda: client.state is EngineState.READY, timeout=60)
    assert client.pid != first_pid
    events = [e async for e in client.generate([4, 5], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))]
    assert len(events) == 3
    assert client.states == [EngineState.STARTING, EngineState.READY, EngineState.RESTARTING, EngineState.READY]  # type: ignore[attr-defined]


async def test_more_deaths_than_the_policy_allows_give_up(client: EngineClient) -> None:
    for _ in range(2):  # max_restarts=1: the second death within the window is one too many
        await until(lambda: client.state is EngineState.READY, timeout=60)
        pid = client.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: client.state is not EngineState.READY, timeout=10)
    await until(lambda: client.state is EngineState.FAILED, timeout=10)
    with pytest.raises(BlazeError, match="not coming back"):
        await anext(client.generate([1], LONG))


async def test_a_model_that_cannot_load_raises_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    engine = EngineClient(broken, CONFIG)
    states: list[EngineState] = []
    engine.on_state = lambda state, why: states.append(state)
    with pytest.raises(RuntimeError, match="could not load the model"):
        await engine.start()
    await asyncio.sleep(1)  # the failed process exits: a load failure, not a death to restart after
    assert engine.state is EngineState.FAILED and states == [EngineState.STARTING, EngineState.FAILED]
    await engine.stop()
