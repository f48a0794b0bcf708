"""The messages between the server process and the engine process: small frozen records.

The server sends commands (``AddRequest``, ``AbortRequest``, ``StatsRequest``, ``Shutdown``);
the engine answers ``EngineReady`` or ``EngineFailed`` once after loading, then one list of
events (``TokenEvent``, ``RequestFailed``, ``EngineStats``) per step. Importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Status
from .params import SamplingParams


@dataclass(frozen=True, slots=True)
class AddRequest:
    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class AbortRequest:
    seq_id: int


@dataclass(frozen=True, slots=True)
class StatsRequest:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = AddRequest | AbortRequest | StatsRequest | Shutdown


@dataclass(frozen=True, slots=True)
class EngineRuntime:
    """What the engine chose where it runs (start-up log, ``blazerpc_llm_engine_info``)."""

    device: str  # "cpu", "cuda", ...
    dtype: str  # of the matrices: "float32", "bfloat16"
    weights: str  # what decode steps read: "full", "int8", "int4"
    isa: str  # the CPU class the kernels run as (llm/cpu.py), "" off CPU
    kernels: str  # "native", or why torch's ops run instead
    threads: int

    def describe(self) -> str:
        isa = f", CPU class {self.isa}" if self.isa else ""
        return (
            f"{self.device}{isa}, {self.dtype} matrices, {self.weights} decode weights, "
            f"kernels: {self.kernels}, {self.threads} threads"
        )


@dataclass(frozen=True, slots=True)
class EngineReady:
    model_name: str
    max_len: int  # context length: prompt + answer
    runtime: EngineRuntime


@dataclass(frozen=True, slots=True)
class EngineFailed:
    message: str


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token of one sequence; ``text`` may be "" while a character or stop string completes."""

    seq_id: int
    token_id: int
    text: str
    step_ms: float
    prefill: bool  # the sequence's first token, made by its prompt's prefill
    finish_reason: str | None = None  # on the last: "stop" or "length"


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The engine could not run a request; it holds nothing of it any more."""

    seq_id: int
    status: Status
    message: str


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The engine's state now, and counters since it started."""

    seqs: int  # running or waiting
    free_blocks: int  # held by no sequence (cached ones included: they are evicted on demand)
    num_blocks: int
    running: int = 0
    waiting: int = 0
    cached_blocks: int = 0  # blocks findable by a later prompt's prefix
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens found there (not computed again)
    prefix_cache_evictions: int = 0
    preemptions: int = 0


Event = TokenEvent | RequestFailed | EngineStats
