"""The engine process (as vLLM's EngineCore): load the model, then step while anything runs.

Measured here: in a thread, the engine and the event loop fought over the GIL (the engine
releases it around every one of its ~1,000 torch calls a step, and a busy loop keeps it up
to 5 ms each time), and 32 streams over HTTP got 90 tokens/s where the bare engine makes
160. In a process, the server only moves small records through a pipe (``protocol``).
This module imports torch only inside ``engine_main``: the server process never loads it.
"""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..errors import BlazeError, Status, short_error
from .config import EngineConfig
from .protocol import (
    AbortRequest,
    AddRequest,
    Command,
    EngineFailed,
    EngineReady,
    EngineRuntime,
    Event,
    RequestFailed,
    Shutdown,
    StatsRequest,
    TokenEvent,
)
from .sequence import Sequence

if TYPE_CHECKING:
    from .engine import LLMEngine

log = logging.getLogger("blazerpc.llm")


def engine_main(conn: Connection, model_path: str, config: EngineConfig) -> None:
    """Entry point of the engine process: load, say ``EngineReady`` (or ``EngineFailed``), serve."""
    # Ctrl-C in a terminal reaches the whole process group; the server decides when the engine
    # stops (after its grace period), by ``Shutdown`` or by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import cpu

    cpu.apply_cap()  # before torch loads: it reads the caps then
    import torch

    from . import kernels
    from .device import torch_device, torch_dtype, weight_format
    from .engine import LLMEngine
    from .loader import load

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        device, dtype, weights = torch_device(config), torch_dtype(config), weight_format(config)
        loaded = load(model_path, max_seq_len=config.max_model_len, device=device, dtype=dtype, weights=weights)
        engine = LLMEngine(loaded, config)
    except Exception as exc:
        conn.send(EngineFailed(short_error(exc, limit=1000)))
        return
    on_cpu = device == "cpu"
    runtime = EngineRuntime(
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        weights=weights,
        isa=cpu.describe() if on_cpu else "",
        kernels=kernels.status() if on_cpu else "torch's ops",
        threads=torch.get_num_threads(),
    )
    conn.send(EngineReady(model_name=loaded.name, max_len=engine.max_len, runtime=runtime))
    EngineLoop(conn, engine).run()


class EngineLoop:
    """Commands in, one list of events out per step. Idle, it sleeps until a command comes."""

    def __init__(self, conn: Connection, engine: LLMEngine) -> None:
        self.conn = conn
        self.engine = engine
        self.out: list[Event] = []  # this step's events, sent as one message

    def run(self) -> None:
        try:
            while True:
                if not self.engine.has_work:
                    self.conn.poll(None)
                while self.conn.poll(0):
                    if not self.handle(self.conn.recv()):
                        return
                if self.engine.has_work:
                    self.step()
                if self.out:
                    self.conn.send(self.out)  # pickled here: the list can be reused
                    self.out.clear()  # cleared, not replaced: the engine's listeners append to it
        except (EOFError, OSError):  # the server process is gone; so are the requests
            return

    def handle(self, command: Command) -> bool:
        """Apply one command; False means stop."""
        match command:
            case AddRequest(seq_id=seq_id, prompt_ids=prompt_ids, params=params):
                try:
                    self.engine.add(Sequence(prompt_ids, params, seq_id=seq_id), self.out.append)
                except BlazeError as exc:
                    self.out.append(RequestFailed(seq_id, exc.status, exc.message))
                except Exception as exc:
                    log.exception("could not add sequence %d", seq_id)
                    self.out.append(RequestFailed(seq_id, Status.INTERNAL, short_error(exc)))
            case AbortRequest(seq_id=seq_id):
                self.engine.abort(seq_id)
            case StatsRequest():
                self.out.append(self.engine.stats())
            case Shutdown():
                return False
        return True

    def step(self) -> None:
        try:
            self.engine.step()
        except Exception as exc:
            log.exception("engine step failed; failing its sequences")
            message = f"the engine failed: {short_error(exc)}"
            for seq_id in list(self.engine.seqs):
                self.engine.abort(seq_id)
                self.out.append(RequestFailed(seq_id, Status.INTERNAL, message))


__all__ = ["EngineLoop", "TokenEvent", "engine_main"]
