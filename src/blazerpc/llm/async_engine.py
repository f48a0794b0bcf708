"""The engine in its own thread, and an asyncio face for it.

The engine thread owns the scheduler and the model; the event loop only puts commands in
its inbox (add, abort) and receives token events through ``call_soon_threadsafe``. Torch
releases the GIL inside its kernels, so the loop keeps serving while a step runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

import torch

from ..errors import BlazeError, Status
from .engine import LLMEngine, TokenEvent
from .sampling import SamplingParams
from .sequence import Sequence

log = logging.getLogger("blazerpc.llm")


class AsyncLLM:
    def __init__(self, engine: LLMEngine, threads: int | None = None) -> None:
        self.engine = engine
        self.threads = threads
        self.capacity = engine.config.max_num_seqs + engine.config.max_waiting
        self.outstanding = 0
        self._inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="blaze-llm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[TokenEvent]:
        """Token events of one request; leaving early aborts it within one engine step."""
        if self.outstanding >= self.capacity:
            raise BlazeError(
                Status.RESOURCE_EXHAUSTED,
                f"the engine is full ({self.capacity} requests running or queued); retry later",
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()

        def deliver(event: TokenEvent | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

        seq = Sequence(prompt_ids, params)
        self.outstanding += 1
        self._inbox.put(("add", seq, deliver))
        finished = False
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    finished = True
                    raise event
                if event.finish_reason is not None:
                    finished = True
                yield event
                if finished:
                    return
        finally:
            self.outstanding -= 1
            if not finished:
                self._inbox.put(("abort", seq.seq_id))

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        engine = self.engine
        while True:
            try:
                command = self._inbox.get(block=not engine.has_work)
            except queue.Empty:
                command = ()
            while command is not None:
                self._apply(command)
                try:
                    command = self._inbox.get_nowait()
                except queue.Empty:
                    break
            if command is None:
                return
            if engine.has_work:
                try:
                    engine.step()
                except Exception as exc:
                    log.exception("engine step failed; failing its sequences")
                    self._fail_all(exc)

    def _apply(self, command: tuple[Any, ...]) -> None:
        if not command:
            return
        if command[0] == "add":
            _, seq, deliver = command
            try:
                self.engine.add(seq, deliver)
            except ValueError as exc:
                deliver(BlazeError(Status.INVALID_ARGUMENT, str(exc)))
        elif command[0] == "abort":
            self.engine.abort(command[1])

    def _fail_all(self, exc: Exception) -> None:
        error = BlazeError(Status.INTERNAL, f"engine failed: {type(exc).__name__}: {exc}")
        for seq_id, state in list(self.engine.states.items()):
            state.listener(error)  # type: ignore[arg-type]
            self.engine.abort(seq_id)
