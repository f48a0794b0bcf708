"""The ``generate`` model: the LLM over gRPC (``PredictGenerate``) and ``POST /generate`` (JSON or SSE).

No ``from __future__ import annotations`` here: the model's hints name local types.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from ..app import BlazeApp
from .front_door import FrontDoor


@dataclass
class GenerateChunk:
    """One generated token. ``token`` may be "" while a character or a stop string completes."""

    token: str
    token_id: int
    prefill_time_ms: float | None = None  # on the first chunk
    step_ms: float | None = None  # on the others
    finish_reason: str | None = None  # on the last: "stop" or "length"


@dataclass
class GenerateResult:
    text: str
    num_tokens: int
    finish_reason: str
    prefill_time_ms: float
    decode_time_ms: float
    tokens_per_second: float


def collect(chunks: list[GenerateChunk]) -> GenerateResult:
    """The non-streaming answer: the whole text, token count, finish reason and timings."""
    prefill = next((c.prefill_time_ms for c in chunks if c.prefill_time_ms is not None), 0.0)
    decode = sum(c.step_ms or 0.0 for c in chunks)
    total_s = (prefill + decode) / 1000
    return GenerateResult(
        text="".join(c.token for c in chunks),
        num_tokens=len(chunks),
        finish_reason=chunks[-1].finish_reason or "length" if chunks else "length",
        prefill_time_ms=round(prefill, 2),
        decode_time_ms=round(decode, 2),
        tokens_per_second=round(len(chunks) / total_s, 2) if total_s > 0 else 0.0,
    )


def add_generate_model(app: BlazeApp, door: FrontDoor) -> None:
    @app.model("generate", streaming=True, collect=collect)
    async def generate(
        prompt: Annotated[str, Field(min_length=1)],
        max_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: list[str] = [],  # noqa: B006 - never mutated; the schema needs a list
        chat: bool = False,
        ignore_eos: bool = False,
    ) -> AsyncIterator[GenerateChunk]:
        """Generate text from a prompt, one token per chunk.

        `max_tokens` >= 1; `temperature` >= 0, 0 is greedy; `top_k` >= 0 and `top_p` in (0, 1],
        0 and 1 turn those filters off; `seed` makes sampling repeatable; generation ends at EOS
        (unless `ignore_eos`, as for benchmarks), at a `stop` string (never emitted) or after
        `max_tokens`. `chat` wraps the prompt in the model's chat template.
        """
        generation = await door.generate(
            [{"role": "user", "content": prompt}] if chat else prompt,
            param="prompt",
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=tuple(stop),
            ignore_eos=ignore_eos,
        )
        try:
            async for event in generation:
                yield GenerateChunk(
                    token=event.text,
                    token_id=event.token_id,
                    prefill_time_ms=round(event.step_ms, 2) if event.prefill else None,
                    step_ms=None if event.prefill else round(event.step_ms, 2),
                    finish_reason=event.finish_reason,
                )
        finally:
            await generation.aclose()
