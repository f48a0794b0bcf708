"""Calling model functions without blocking the event loop.

Coroutines and async generators run on the loop. Sync functions and sync generators run
in a thread pool; a sync generator advances one item per pool task, so cancelling its
consumer closes it right after the item in progress, in the thread that ran it. Pool tasks run
in a copy of the caller's context variables, so the call's ``Context`` (and its request id in
log lines) is current there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from .registry import ModelInfo

#: A send loop gives the event loop a turn after this many items (``await asyncio.sleep(0)``),
#: so a generator that never awaits cannot starve other clients or hide a cancellation.
YIELD_EVERY = 16


class Runtime:
    """Owns the worker threads that run sync model code."""

    def __init__(self, max_threads: int = 64) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="blaze-model")

    async def call(self, model: ModelInfo, kwargs: dict[str, Any]) -> Any:
        """Run a unary model function once."""
        if model.is_coroutine:
            return await model.fn(**kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(contextvars.copy_context().run, model.fn, **kwargs))

    @asynccontextmanager
    async def stream(self, model: ModelInfo, kwargs: dict[str, Any]) -> AsyncIterator[AsyncIterator[Any]]:
        """The items of a streaming model; leaving the block closes the generator."""
        source = model.fn(**kwargs)
        if inspect.isasyncgen(source):
            try:
                yield source
            finally:
                await source.aclose()
        else:
            threaded = _ThreadedIterator(source, self.executor)
            try:
                yield threaded
            finally:
                threaded.close()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


_DONE = object()


def _next(gen: Iterator[Any]) -> Any:
    return next(gen, _DONE)


class _ThreadedIterator:
    """An async iterator over a sync generator, one ``next()`` per pool task."""

    def __init__(self, gen: Iterator[Any], executor: concurrent.futures.Executor) -> None:
        self.gen = gen
        self.executor = executor
        self.pending: concurrent.futures.Future[Any] | None = None

    def __aiter__(self) -> _ThreadedIterator:
        return self

    async def __anext__(self) -> Any:
        self.pending = self.executor.submit(contextvars.copy_context().run, _next, self.gen)
        item = await asyncio.wrap_future(self.pending)
        if item is _DONE:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Close the generator (its ``finally`` runs) once any ``next()`` in flight returns."""
        close = getattr(self.gen, "close", None)
        if close is None:
            return
        run = contextvars.copy_context().run
        if self.pending is None or self.pending.done():
            self.executor.submit(run, close)
        else:
            self.pending.add_done_callback(lambda _: run(close))
