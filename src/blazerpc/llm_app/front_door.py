"""``FrontDoor``: the one way into the engine for every route (``/generate`` on both transports, ``/v1/*``).

It takes a prompt or chat messages, applies the chat template, tokenizes once and never on
the event loop, checks the length once, builds the sampling parameters by keyword, and
returns the request's token events. A request that arrives while the model loads waits for
it (up to ``startup_timeout_s``); errors are ``BlazeError``s with a status and a field.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BlazeError, InvalidArgument, Status
from ..llm.client import EngineClient, RestartPolicy, StateListener
from ..llm.config import EngineConfig
from ..llm.model_files import load_tokenizer, model_path
from ..llm.params import InvalidParam, SamplingParams
from ..llm.protocol import TokenEvent
from ..llm.tokenizer import LlamaTokenizer
from .metrics import LLMMetrics

#: A chat message as the chat template reads it: ``{"role": ..., "content": ...}``.
Message = dict[str, str]


@dataclass
class Generation:
    """One request on its way: its prompt's length, and its token events (``aclose`` aborts it)."""

    prompt_tokens: int
    events: AsyncGenerator[TokenEvent]

    def __aiter__(self) -> AsyncIterator[TokenEvent]:
        return self.events

    async def aclose(self) -> None:
        await self.events.aclose()


class FrontDoor:
    def __init__(
        self,
        model: str | Path | None = None,
        config: EngineConfig | None = None,
        restart: RestartPolicy | None = None,
        on_state: StateListener | None = None,
        startup_timeout_s: float = 120.0,
        metrics: LLMMetrics | None = None,
    ) -> None:
        self.path = model_path(model)
        self.metrics = metrics
        self.config = config or EngineConfig()
        self.client = EngineClient(self.path, self.config, restart, on_state)
        self.startup_timeout_s = startup_timeout_s
        self.tokenizer: LlamaTokenizer | None = None
        self.max_token_bytes = 0
        self._started = asyncio.Event()
        # Tokenizers' encode_batch releases the GIL (encode does not: 70 ms of a 200 KB prompt
        # stalled the loop). One thread: with two tokenizing long prompts at once, both cores were
        # busy and /health's p99 reached ~50 ms; with one, a core stays for the event loop.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="blaze-tokenize")

    @property
    def model_name(self) -> str:
        return self.client.info.model_name if self.client.info is not None else self.path.stem

    @property
    def max_len(self) -> int:
        return self.client.info.max_len if self.client.info is not None else self.config.max_model_len

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tokenizer = await loop.run_in_executor(self._pool, load_tokenizer, self.path)
        self.max_token_bytes = await loop.run_in_executor(self._pool, _max_token_bytes, self.tokenizer)
        await self.client.start()
        self._started.set()

    async def stop(self) -> None:
        await self.client.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def generate(
        self,
        prompt: str | Sequence[Message],
        *,
        max_tokens: int | None = None,
        param: str | None = None,
        **sampling: Any,
    ) -> Generation:
        """Start one request. ``prompt`` is text, or chat messages put through the chat template;
        ``max_tokens`` None means the rest of the context; ``sampling`` are ``SamplingParams``
        fields; ``param`` names the prompt's field in errors (default "prompt" or "messages")."""
        arrived = time.perf_counter()
        param = param or ("prompt" if isinstance(prompt, str) else "messages")
        await self._wait_started()
        ids = await asyncio.get_running_loop().run_in_executor(self._pool, self._encode, prompt, param)
        room = self.max_len - len(ids)
        try:
            params = SamplingParams(max_tokens=room if max_tokens is None else min(max_tokens, room), **sampling)
        except InvalidParam as exc:
            raise InvalidArgument(str(exc), param=exc.param) from None
        events = self.client.generate(ids, params)
        if self.metrics is not None:
            events = self.metrics.observe(events, len(ids), arrived)
        return Generation(len(ids), events)

    async def _wait_started(self) -> None:
        if self._started.is_set():
            return
        try:
            await asyncio.wait_for(self._started.wait(), self.startup_timeout_s)
        except TimeoutError:
            raise BlazeError(
                Status.UNAVAILABLE, f"the model is still loading after {self.startup_timeout_s:g} s", retry_after=5
            ) from None

    def _encode(self, prompt: str | Sequence[Message], param: str) -> list[int]:
        """Token ids of the prompt (in a pool thread), refused if they leave no room to generate."""
        tokenizer = self.tokenizer
        assert tokenizer is not None
        if not isinstance(prompt, str):
            try:
                prompt = tokenizer.apply_chat_template([dict(m) for m in prompt])
            except ValueError as exc:
                raise InvalidArgument(str(exc), param=param) from None
        if not prompt:
            raise InvalidArgument(f"{param} must not be empty", param=param)
        # Each token covers at most max_token_bytes of text: a prompt too long for that many is
        # refused without tokenizing it (a 1 MB prompt would take ~0.3 s of a core).
        at_least = -(-len(prompt.encode("utf-8", "surrogatepass")) // self.max_token_bytes)
        if at_least >= self.max_len:
            raise self._too_long(f"at least {at_least}", param)
        ids = tokenizer.encode(prompt)
        if len(ids) >= self.max_len:
            raise self._too_long(str(len(ids)), param)
        return ids

    def _too_long(self, count: str, param: str) -> BlazeError:
        return InvalidArgument(
            f"the prompt is {count} tokens; the context holds {self.max_len}, with room for at least one more",
            param=param,
        )


def _max_token_bytes(tokenizer: LlamaTokenizer) -> int:
    specials = [t.content for t in tokenizer.tokenizer.get_added_tokens_decoder().values()]
    return max(max(map(len, tokenizer.token_bytes)), *(len(s.encode()) for s in specials), 1)
