"""``blaze llm --demo``: stream one answer in the terminal, then time to first token and speed."""

from __future__ import annotations

import asyncio
import sys
import time

from .sampling import SamplingParams
from .service import LLMService


def run_demo(service: LLMService, prompt: str, max_tokens: int) -> int:
    return asyncio.run(_demo(service, prompt, max_tokens))


async def _demo(service: LLMService, prompt: str, max_tokens: int) -> int:
    print(f"loading {service.model_path or 'the default model (SmolLM2-135M-Instruct)'} ...", file=sys.stderr)
    await service.start()
    try:
        return await _stream(service, prompt, max_tokens)
    finally:
        await service.stop()


async def _stream(service: LLMService, prompt: str, max_tokens: int) -> int:
    assert service.llm is not None
    print(f"> {prompt}\n")
    started = time.perf_counter()
    first = None
    count = 0
    params = SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=0)
    async for event in service.llm.generate(service.prompt_ids(prompt, chat=True), params):
        if first is None:
            first = time.perf_counter()
        count += 1
        print(event.text, end="", flush=True)
    done = time.perf_counter()
    ttft = ((first or done) - started) * 1000
    rate = (count - 1) / (done - first) if first is not None and count > 1 and done > first else 0.0
    print(f"\n\ntime to first token: {ttft:.0f} ms, {count} tokens, {rate:.1f} tokens/s after the first")
    return 0
