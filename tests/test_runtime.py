from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from blazerpc import BlazeApp
from blazerpc.registry import ModelInfo
from blazerpc.runtime import Runtime
from tests.conftest import until


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(max_threads=4)
    yield rt
    rt.shutdown()


def model(fn: object, streaming: bool = False) -> ModelInfo:
    app = BlazeApp()
    app.model("m", streaming=streaming)(fn)  # type: ignore[type-var]
    return app.registry["m"]


async def test_call_runs_sync_functions_in_a_worker_thread(runtime: Runtime) -> None:
    seen: list[threading.Thread] = []

    def where(tag: str) -> str:
        seen.append(threading.current_thread())
        return tag

    assert await runtime.call(model(where), {"tag": "t"}) == "t"
    assert seen[0].ident != threading.get_ident()
    assert seen[0].name.startswith("blaze-model")


async def test_call_runs_coroutines_on_the_event_loop_thread(runtime: Runtime) -> None:
    seen: list[int | None] = []

    async def where(tag: str) -> str:
        await asyncio.sleep(0)
        seen.append(threading.get_ident())
        return tag

    assert await runtime.call(model(where), {"tag": "t"}) == "t"
    assert seen == [threading.get_ident()]


async def test_call_propagates_the_model_exception(runtime: Runtime) -> None:
    def fail(n: int) -> int:
        raise ValueError(f"bad {n}")

    with pytest.raises(ValueError, match="bad 3"):
        await runtime.call(model(fail), {"n": 3})


async def test_stream_yields_every_item_of_sync_and_async_generators(runtime: Runtime) -> None:
    def sync_gen(n: int) -> Iterator[int]:
        yield from range(n)

    async def async_gen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    for fn in (sync_gen, async_gen):
        async with runtime.stream(model(fn, streaming=True), {"n": 40}) as items:
            assert [i async for i in items] == list(range(40))


async def test_leaving_early_closes_an_async_generator_on_the_loop(runtime: Runtime) -> None:
    closed: list[int] = []

    async def gen(n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
        finally:
            closed.append(threading.get_ident())

    async with runtime.stream(model(gen, streaming=True), {"n": 100}) as items:
        assert await anext(items) == 0
    assert closed == [threading.get_ident()]


async def test_leaving_early_closes_a_sync_generator_in_a_worker_thread(runtime: Runtime) -> None:
    closed: list[int] = []

    def gen(n: int) -> Iterator[int]:
        try:
            yield from range(n)
        finally:
            closed.append(threading.get_ident())

    async with runtime.stream(model(gen, streaming=True), {"n": 100}) as items:
        assert [await anext(items), await anext(items)] == [0, 1]
    await until(lambda: bool(closed))
    assert closed[0] != threading.get_ident()


async def test_sync_generator_closes_after_the_item_in_flight_when_cancelled(runtime: Runtime) -> None:
    resumed, release = threading.Event(), threading.Event()
    closed: list[str] = []

    def gen(n: int) -> Iterator[int]:
        try:
            yield 0
            resumed.set()
            release.wait(10)
            yield 1
            closed.append("too far")
        finally:
            closed.append("closed")

    async with runtime.stream(model(gen, streaming=True), {"n": 2}) as items:
        assert await anext(items) == 0
        waiting = asyncio.ensure_future(anext(items))
        await until(resumed.is_set)  # next() is running in a worker, no longer cancellable
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert closed == []  # next() is still blocked in the worker; close must wait for it
    release.set()
    await until(lambda: bool(closed))
    assert closed == ["closed"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_stream_propagates_an_exception_from_the_generator(runtime: Runtime, kind: str) -> None:
    def sync_gen(n: int) -> Iterator[int]:
        yield from range(n)
        raise RuntimeError("broke midway")

    async def async_gen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise RuntimeError("broke midway")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="broke midway"):
        async with runtime.stream(model(sync_gen if kind == "sync" else async_gen, streaming=True), {"n": 3}) as items:
            async for i in items:
                got.append(i)
    assert got == [0, 1, 2]


async def test_shutdown_stops_accepting_sync_work() -> None:
    rt = Runtime(max_threads=1)

    def double(x: int) -> int:
        return 2 * x

    assert await rt.call(model(double), {"x": 2}) == 4
    rt.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        await rt.call(model(double), {"x": 2})
