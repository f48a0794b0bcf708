"""The code of the BlazeRPC streaming guide, verbatim, made runnable.

Only ``run_my_llm`` and ``model.generate`` (which the guide leaves to the reader) and the
``main()`` wrapper around the client block are ours; tests/test_seed_guide.py runs it.
"""

import sys

# --- what the guide leaves to the reader ---


def run_my_llm(prompt):
    return [word + " " for word in prompt.split()]


class _Model:
    async def generate(self, prompt):
        for token in run_my_llm(prompt):
            yield token


model = _Model()

# --- "Basic usage", verbatim ---
import asyncio
from blazerpc import BlazeApp

app = BlazeApp()

@app.model("generate", streaming=True)
async def generate_tokens(prompt: str) -> str:
    tokens = run_my_llm(prompt)
    for token in tokens:
        await asyncio.sleep(0)  # yield control to the event loop
        yield token

# --- "Client disconnection", verbatim, registered under another name ---
cleanup_app = BlazeApp()

@cleanup_app.model("generate", streaming=True)
async def generate_tokens(prompt: str) -> str:
    try:
        async for token in model.generate(prompt):
            yield token
    finally:
        # cleanup resources if needed
        pass


async def main(port):
    # --- "Consuming a stream with BlazeClient", verbatim but for the port ---
    from blazerpc import BlazeClient

    async with BlazeClient("127.0.0.1", port, registry=app.registry) as client:
        async for token in client.stream("generate", prompt="Tell me about gRPC"):
            print(token, end="", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50051))
