"""The engine in its own process (as vLLM's EngineCore), and an asyncio face for it.

Measured here: in a thread, the engine and the event loop fought over the GIL (the engine
releases it around every one of its ~1,000 torch calls a step, and a busy loop keeps it up
to 5 ms each time), and 32 streams over HTTP got 90 tokens/s where the bare engine makes
160. In a process, the loop only moves small messages through a pipe: the parent sends
``add``/``abort`` commands, the engine sends back one list of token events per step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..errors import BlazeError, Status
from .engine import EngineConfig, TokenEvent
from .sampling import SamplingParams

log = logging.getLogger("blazerpc.llm")


@dataclass(frozen=True)
class EngineInfo:
    model_name: str
    max_len: int


def engine_main(conn: Connection, model_path: str | None, config: EngineConfig, threads: int | None) -> None:
    """The engine process: load, then loop ``step()`` while anything runs, else wait for commands."""
    import torch

    from .engine import LLMEngine
    from .loader import load
    from .sequence import Sequence

    if threads:
        torch.set_num_threads(threads)
    try:
        loaded = load(
            model_path, max_seq_len=config.max_model_len, device=config.torch_device, dtype=config.torch_dtype
        )
        engine = LLMEngine(loaded, config)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", EngineInfo(loaded.name, engine.max_len)))
    out: list[tuple[Any, ...]] = []  # this step's messages, sent as one

    def emit(event: TokenEvent) -> None:
        out.append(_pack(event))

    while True:
        if not engine.has_work:
            conn.poll(None)  # idle: sleep until a command comes
        while conn.poll(0):
            command = conn.recv()
            kind = command[0]
            if kind == "add":
                _, seq_id, prompt_ids, params = command
                try:
                    engine.add(Sequence(prompt_ids, params, seq_id=seq_id), emit)
                except ValueError as exc:
                    out.append(("error", seq_id, str(exc)))
            elif kind == "abort":
                engine.abort(command[1])
            elif kind == "stats":
                out.append(("stats", engine.scheduler.num_seqs, engine.blocks.num_free, engine.blocks.num_blocks))
            elif kind == "stop":
                return
        if engine.has_work:
            try:
                engine.step()
            except Exception as exc:
                log.exception("engine step failed; failing its sequences")
                for seq_id in list(engine.seqs):
                    out.append(("error", seq_id, f"engine failed: {type(exc).__name__}: {exc}"))
                    engine.abort(seq_id)
        if out:
            conn.send(out)  # pickled here, so the list can be reused
            out.clear()


def _pack(e: TokenEvent) -> tuple[Any, ...]:
    return ("token", e.seq_id, e.token_id, e.text, e.step_ms, e.prefill, e.finish_reason)


class AsyncLLM:
    """Starts the engine process and streams its token events to asyncio callers."""

    def __init__(self, model_path: str | Path | None, config: EngineConfig, threads: int | None = None) -> None:
        self.model_path = str(model_path) if model_path is not None else None
        self.config = config
        self.threads = threads
        self.capacity = config.max_num_seqs + config.max_waiting
        self.info: EngineInfo | None = None
        self._ids = itertools.count()
        self._queues: dict[int, asyncio.Queue[tuple[Any, ...]]] = {}
        self._stats: asyncio.Future[dict[str, int]] | None = None
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    @property
    def outstanding(self) -> int:
        return len(self._queues)

    async def start(self) -> EngineInfo:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=engine_main, args=(child, self.model_path, self.config, self.threads), daemon=True,
            name="blaze-llm-engine",
        )  # fmt: skip
        self._process.start()
        child.close()
        loop = asyncio.get_running_loop()
        kind, payload = await loop.run_in_executor(None, parent.recv)
        if kind != "ready":
            self._process.join()
            raise RuntimeError(f"the engine process could not load the model: {payload}")
        info: EngineInfo = payload
        self._conn = parent
        self.info = info
        loop.add_reader(parent.fileno(), self._on_readable)
        return info

    async def stop(self) -> None:
        if self._conn is None or self._process is None:
            return
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        await asyncio.get_running_loop().run_in_executor(None, self._process.join, 10)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()
        self._conn = None

    async def stats(self) -> dict[str, int]:
        """``{"seqs", "free_blocks", "num_blocks"}`` as the engine process sees them now."""
        assert self._conn is not None
        self._stats = asyncio.get_running_loop().create_future()
        self._conn.send(("stats",))
        return await self._stats

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncGenerator[TokenEvent]:
        """Token events of one request; leaving early aborts it within one engine step."""
        if self._conn is None:
            raise BlazeError(Status.UNAVAILABLE, "the engine is not running")
        if self.outstanding >= self.capacity:
            raise BlazeError(
                Status.RESOURCE_EXHAUSTED,
                f"the engine is full ({self.capacity} requests running or queued); retry later",
            )
        seq_id = next(self._ids)
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._queues[seq_id] = queue
        self._conn.send(("add", seq_id, prompt_ids, params))
        finished = False
        try:
            while True:
                message = await queue.get()
                if message[0] == "error":
                    finished = True
                    raise BlazeError(
                        Status.INVALID_ARGUMENT if "no room" in message[2] else Status.INTERNAL, message[2]
                    )
                _, _, token_id, text, step_ms, prefill, reason = message
                finished = reason is not None
                yield TokenEvent(seq_id, token_id, text, step_ms, prefill, reason)
                if finished:
                    return
        finally:
            del self._queues[seq_id]
            if not finished and self._conn is not None:
                self._conn.send(("abort", seq_id))

    def _on_readable(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while conn.poll():
                for message in conn.recv():
                    if message[0] == "stats":
                        if self._stats is not None and not self._stats.done():
                            self._stats.set_result(
                                dict(zip(("seqs", "free_blocks", "num_blocks"), message[1:], strict=True))
                            )
                        continue
                    queue = self._queues.get(message[1])
                    if queue is not None:  # else: aborted by its caller meanwhile
                        queue.put_nowait(message)
        except (EOFError, OSError):
            log.error("the engine process exited (pid %s)", self._process.pid if self._process else "?")
            asyncio.get_running_loop().remove_reader(conn.fileno())
            for seq_id, queue in self._queues.items():
                queue.put_nowait(("error", seq_id, "the engine process exited"))
