"""The batcher: one call per batch, timing edges, partial failure, overflow, cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from blazerpc import BlazeApp, BlazeError, Status, TensorInput, TensorOutput
from blazerpc.batching import Batcher
from blazerpc.registry import BatchConfig
from blazerpc.runtime import Runtime


def make(fn_app: BlazeApp, name: str, **config: float) -> Batcher:
    model = fn_app.registry[name]
    cfg = BatchConfig(**{"max_batch_size": 8, "batch_timeout_ms": 20.0, "max_queue_size": 64, **config})  # type: ignore[arg-type]
    batcher = Batcher(model, Runtime(), cfg)
    batcher.start()
    return batcher


def list_app(calls: list[list[str]], delay: float = 0.0) -> BlazeApp:
    app = BlazeApp()

    @app.model("upper", batching=True)
    async def upper(text: str) -> str:  # receives list[str] when batched
        calls.append(list(text))
        await asyncio.sleep(delay)
        return [t.upper() if t != "bad" else ValueError(f"cannot shout {t!r}") for t in text]  # type: ignore[return-value]

    return app


async def test_concurrent_requests_make_one_call() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls), "upper")
    results = await asyncio.gather(*(batcher.submit({"text": f"t{i}"}) for i in range(8)))
    assert results == [f"T{i}" for i in range(8)]
    assert calls == [[f"t{i}" for i in range(8)]]
    assert batcher.stats.sizes == {8: 1}
    await batcher.stop()


async def test_full_batch_dispatches_at_once_and_a_lone_request_after_the_timeout() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls), "upper", batch_timeout_ms=2000)
    started = time.monotonic()
    await asyncio.gather(*(batcher.submit({"text": "x"}) for i in range(8)))
    assert time.monotonic() - started < 1.0  # full: no waiting for the 2 s timeout
    await batcher.stop()

    batcher = make(list_app(calls), "upper", batch_timeout_ms=50)
    started = time.monotonic()
    assert await batcher.submit({"text": "lone"}) == "LONE"
    waited = time.monotonic() - started
    assert 0.04 < waited < 1.0
    await batcher.stop()


async def test_batches_never_exceed_max_size_and_pipeline_under_load() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls, delay=0.05), "upper", max_batch_size=4, batch_timeout_ms=1)
    await asyncio.gather(*(batcher.submit({"text": str(i)}) for i in range(20)))
    assert max(len(c) for c in calls) == 4
    assert sorted(x for c in calls for x in c) == sorted(str(i) for i in range(20))
    # while the first batch ran, the rest queued up: later batches are full
    assert [len(c) for c in calls][1:] == [4, 4, 4, 4]
    await batcher.stop()


async def test_an_exception_in_the_result_fails_only_that_request() -> None:
    batcher = make(list_app([]), "upper")
    results = await asyncio.gather(*(batcher.submit({"text": t}) for t in ["a", "bad", "c"]), return_exceptions=True)
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError) and "cannot shout 'bad'" in str(results[1])
    await batcher.stop()


async def test_raising_or_a_wrong_length_fails_every_request_with_a_clear_message() -> None:
    app = BlazeApp()

    @app.model("boom", batching=True)
    def boom(x: int) -> int:
        raise RuntimeError("model exploded")

    @app.model("short", batching=True)
    def short(x: int) -> int:
        return [1]  # type: ignore[return-value]

    for name, message in [("boom", "model 'boom' failed: RuntimeError: model exploded"),
                          ("short", "batched call returned 1 results for a batch of 3")]:  # fmt: skip
        batcher = make(app, name)
        results = await asyncio.gather(*(batcher.submit({"x": i}) for i in range(3)), return_exceptions=True)
        for r in results:
            assert isinstance(r, BlazeError) and r.status == Status.INTERNAL and message in r.message
        await batcher.stop()


async def test_overflow_is_rejected_at_once_and_queued_requests_are_kept() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls, delay=0.2), "upper", max_batch_size=2, max_queue_size=3, batch_timeout_ms=1)
    first = [asyncio.create_task(batcher.submit({"text": str(i)})) for i in range(2)]
    await asyncio.sleep(0.05)  # the first batch is running; the queue is empty again
    queued = [asyncio.create_task(batcher.submit({"text": f"q{i}"})) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(BlazeError) as err:
        await batcher.submit({"text": "overflow"})
    assert err.value.status == Status.RESOURCE_EXHAUSTED and "queue of model 'upper' is full" in err.value.message
    assert await asyncio.gather(*first, *queued) == ["0", "1", "Q0", "Q1", "Q2"]
    assert batcher.stats.rejected == 1
    await batcher.stop()


async def test_a_request_cancelled_while_queued_never_runs_and_others_are_unaffected() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls, delay=0.1), "upper", max_batch_size=2, batch_timeout_ms=1)
    running = [asyncio.create_task(batcher.submit({"text": t})) for t in ["a", "b"]]
    await asyncio.sleep(0.03)
    doomed = asyncio.create_task(batcher.submit({"text": "doomed"}))
    kept = asyncio.create_task(batcher.submit({"text": "kept"}))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await asyncio.gather(*running, kept) == ["A", "B", "KEPT"]
    assert all("doomed" not in c for c in calls)
    assert batcher.stats.dropped == 1
    await batcher.stop()


async def test_a_request_cancelled_while_its_batch_runs_does_not_fail_the_others() -> None:
    calls: list[list[str]] = []
    batcher = make(list_app(calls, delay=0.1), "upper", batch_timeout_ms=1)
    tasks = [asyncio.create_task(batcher.submit({"text": t})) for t in ["a", "b", "c"]]
    await asyncio.sleep(0.05)
    tasks[1].cancel()
    assert await tasks[0] == "A" and await tasks[2] == "C"
    assert tasks[1].cancelled()
    await batcher.stop()


async def test_tensor_mode_concatenates_rows_and_splits_the_output() -> None:
    app = BlazeApp()
    seen: list[tuple[int, ...]] = []

    @app.model("double", batching=True)
    def double(x: TensorInput[np.float32, "batch", 2]) -> TensorOutput[np.float32, "batch", 2]:
        seen.append(x.shape)
        return x * 2

    batcher = make(app, "double")
    assert batcher.tensor_mode
    inputs = [np.full((rows, 2), rows, np.float32) for rows in (1, 3, 2)]
    outputs = await asyncio.gather(*(batcher.submit({"x": x}) for x in inputs))
    assert seen == [(6, 2)]
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    await batcher.stop()


def test_batch_config_validates() -> None:
    with pytest.raises(ValueError, match="batch_timeout_ms must be >= 0"):
        BatchConfig(batch_timeout_ms=-1)
    with pytest.raises(ValueError, match="max_queue_size must be >= 1"):
        BatchConfig(max_queue_size=0)
