"""One generation request as the engine sees it."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from .params import SamplingParams

_ids = itertools.count()


class SeqState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    seq_id: int = field(default_factory=lambda: next(_ids))
    output_ids: list[int] = field(default_factory=list)
    state: SeqState = SeqState.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0  # leading tokens whose K/V are in the cache
    num_published: int = 0  # leading blocks findable by later sequences (``BlockManager.publish``)
    block_hashes: list[bytes] = field(default_factory=list)  # chained hashes of leading full blocks
    prefill_ms: float = 0.0  # time of the steps that computed its prompt, until its first token

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def last_id(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]
