"""The LLM as a blazerpc app: a streaming ``generate`` model over gRPC and HTTP.

No ``from __future__ import annotations`` here: the model's hints name local types.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from ..app import BlazeApp
from ..errors import BlazeError, Status
from .async_engine import AsyncLLM
from .engine import EngineConfig
from .loader import load_tokenizer
from .openai_api import openai_router
from .sampling import SamplingParams
from .tokenizer import LlamaTokenizer

log = logging.getLogger("blazerpc.llm")


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


class LLMService:
    """The LLM as a BlazeApp (``app``): the engine process starts with the server."""

    def __init__(
        self, model_path: str | Path | None = None, config: EngineConfig | None = None, threads: int | None = None
    ) -> None:
        self.model_path = model_path
        self.config = config or EngineConfig()
        self.threads = threads
        self.tokenizer: LlamaTokenizer | None = None
        self.llm: AsyncLLM | None = None
        self.max_len = self.config.max_model_len
        self.app = self._build_app()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tokenizer = await loop.run_in_executor(None, load_tokenizer, self.model_path)
        llm = AsyncLLM(self.model_path, self.config, self.threads)
        info = await llm.start()
        self.max_len = info.max_len
        self.llm = llm
        log.info("model %s loaded in engine process", info.model_name)

    async def stop(self) -> None:
        if self.llm is not None:
            await self.llm.stop()

    def prompt_ids(self, prompt: str, chat: bool) -> list[int]:
        assert self.tokenizer is not None
        if chat:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def _check_prompt(self, prompt: str) -> str:
        if not prompt:
            raise ValueError("prompt must not be empty")
        if self.tokenizer is not None:
            n = len(self.tokenizer.encode(prompt))
            if n >= self.max_len:
                raise ValueError(
                    f"prompt is {n} tokens; the context holds {self.max_len}, with room for at least one more"
                )
        return prompt

    def _build_app(self) -> BlazeApp:
        app = BlazeApp("blazerpc-llm")
        service = self
        Prompt = Annotated[str, AfterValidator(self._check_prompt)]

        @app.on_startup
        async def start_engine() -> None:
            await service.start()

        @app.on_shutdown
        async def stop_engine() -> None:
            await service.stop()

        @app.model("generate", streaming=True, collect=collect)
        async def generate(
            prompt: Prompt,
            max_tokens: Annotated[int, Field(ge=1)] = 128,
            temperature: Annotated[float, Field(ge=0)] = 0.7,
            top_p: Annotated[float, Field(gt=0, le=1)] = 1.0,
            top_k: Annotated[int, Field(ge=0)] = 0,
            seed: int | None = None,
            stop: list[str] = [],  # noqa: B006 - never mutated; the schema needs a list
            chat: bool = False,
            ignore_eos: bool = False,
        ) -> AsyncIterator[GenerateChunk]:
            """Generate text from a prompt, one token per chunk.

            `temperature` 0 is greedy; `top_k` 0 and `top_p` 1 turn those filters off; `seed`
            makes sampling repeatable; generation ends at EOS (unless `ignore_eos`, as for
            benchmarks), at a `stop` string (never emitted) or after `max_tokens`. `chat` wraps
            the prompt in the model's chat template.
            """
            if service.llm is None:
                raise BlazeError(Status.UNAVAILABLE, "the model is still loading")
            try:
                params = SamplingParams(max_tokens, temperature, top_p, top_k, seed, tuple(stop), ignore_eos)
            except ValueError as exc:
                raise BlazeError(Status.INVALID_ARGUMENT, str(exc)) from None
            async for event in service.llm.generate(service.prompt_ids(prompt, chat), params):
                yield GenerateChunk(
                    token=event.text,
                    token_id=event.token_id,
                    prefill_time_ms=round(event.step_ms, 2) if event.prefill else None,
                    step_ms=None if event.prefill else round(event.step_ms, 2),
                    finish_reason=event.finish_reason,
                )

        app.include_router(openai_router(self))
        return app
