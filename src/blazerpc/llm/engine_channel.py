"""``EngineChannel``: one incarnation of the engine process, its pipe, and the two threads that
move messages so that the event loop never touches the pipe (a full pipe blocks the writer
thread, not the loop; the reader hands each step's events to the loop in one call)."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from .config import EngineConfig
from .engine_process import engine_main
from .protocol import Command, EngineReady, Shutdown


class EngineChannel:
    """One incarnation of the engine: the process, its pipe, and the threads that move messages."""

    def __init__(self, model_path: str, config: EngineConfig, on_message: Callable[[EngineChannel, Any], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=engine_main, args=(child, model_path, config), daemon=True, name="blaze-llm-engine"
        )
        self.process.start()
        child.close()  # so that our end reads EOF when the engine dies
        self.on_message = on_message
        self.commands: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self.ready: asyncio.Future[EngineReady] = asyncio.get_running_loop().create_future()
        self.exit_description = ""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._write, name="blaze-engine-writer", daemon=True).start()
        self._reader = threading.Thread(target=self._read, name="blaze-engine-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, command: Command) -> None:
        self.commands.put(command)

    def _write(self) -> None:
        while (command := self.commands.get()) is not None:
            try:
                self.conn.send(command)
            except OSError:  # the engine died; the reader reports it
                return

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                self._loop.call_soon_threadsafe(self.on_message, self, message)
        except (EOFError, OSError):
            pass
        self.process.join(5)
        self.exit_description = describe_exit(self.process.exitcode)
        self.commands.put(None)
        self._loop.call_soon_threadsafe(self.on_message, self, None)  # None: the process is gone

    def close(self, timeout: float) -> None:
        """Ask the engine to stop, wait up to ``timeout`` seconds, then kill it (blocking: run in a thread)."""
        self.send(Shutdown())
        # The reader reaps the process once its pipe closes; a second thread waiting on the same
        # child could reap it first and leave the reader without the exit code.
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.process.kill()
            self._reader.join(10)
        self.commands.put(None)
        self.conn.close()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"
