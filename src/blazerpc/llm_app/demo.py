"""``blaze llm --demo``: stream one answer in the terminal, then time to first token and speed."""

from __future__ import annotations

import asyncio
import sys
import time

from .front_door import FrontDoor


def run_demo(door: FrontDoor, prompt: str, max_tokens: int) -> int:
    return asyncio.run(_demo(door, prompt, max_tokens))


async def _demo(door: FrontDoor, prompt: str, max_tokens: int) -> int:
    print(f"loading {door.path.name} ...", file=sys.stderr)
    await door.start()
    try:
        return await _stream(door, prompt, max_tokens)
    finally:
        await door.stop()


async def _stream(door: FrontDoor, prompt: str, max_tokens: int) -> int:
    print(f"> {prompt}\n")
    started = time.perf_counter()
    first = None
    count = 0
    generation = await door.generate([{"role": "user", "content": prompt}], max_tokens=max_tokens, seed=0)
    async for event in generation:
        if first is None:
            first = time.perf_counter()
        count += 1
        print(event.text, end="", flush=True)
    done = time.perf_counter()
    ttft = ((first or done) - started) * 1000
    rate = (count - 1) / (done - first) if first is not None and count > 1 and done > first else 0.0
    print(f"\n\ntime to first token: {ttft:.0f} ms, {count} tokens, {rate:.1f} tokens/s after the first")
    return 0
