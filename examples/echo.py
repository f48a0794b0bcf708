"""A small app: the seed guide's streaming model plus unary, tensor and structured models.

blaze serve examples.echo:app
"""

import asyncio
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field

from blazerpc import BlazeApp, TensorInput, TensorOutput

app = BlazeApp("echo")


@dataclass
class Token:
    token: str
    token_id: int


@app.model("generate", streaming=True)
async def generate_tokens(prompt: str, max_tokens: int = 32) -> Token:
    """Stream the prompt back word by word."""
    for i, word in enumerate(prompt.split()[:max_tokens]):
        await asyncio.sleep(0.01)
        yield Token(token=word + " ", token_id=i)


@app.model("echo", version="1")
def echo(text: str, times: Annotated[int, Field(ge=0, le=1000)] = 1) -> str:
    """Repeat the text (at most 1,000 times: a bound keeps a client from asking for terabytes)."""
    return text * times


@app.model("normalize")
def normalize(x: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 4]:
    """Scale each row to unit length."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
