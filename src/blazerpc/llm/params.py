"""What one request asks of the engine: plain data, importable without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Seeds a torch generator accepts (``torch.Generator.manual_seed``); larger ones overflow.
SEED_RANGE = (-(2**63), 2**64 - 1)

#: Caps on ``stop``: every stop string is checked against each new token's text, so 100,000 of
#: them slowed every stream sharing the engine. OpenAI allows 4 strings and vLLM has no cap;
#: 16 of 256 characters leave room for templates' end markers and a few user phrases.
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256


class InvalidParam(ValueError):
    """A sampling parameter out of range; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to pick tokens and when to stop. ``temperature=0`` is greedy; build it by keyword."""

    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidParam("max_tokens", f"max_tokens must be >= 1, got {self.max_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidParam("temperature", f"temperature must be a number >= 0, got {self.temperature}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InvalidParam("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidParam("top_k", f"top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise InvalidParam("seed", f"seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidParam("stop", f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        if any(not s for s in self.stop):
            raise InvalidParam("stop", "stop strings must not be empty")
        if longest := max((len(s) for s in self.stop if len(s) > MAX_STOP_CHARS), default=0):
            raise InvalidParam("stop", f"stop strings must be at most {MAX_STOP_CHARS} characters, got {longest}")
