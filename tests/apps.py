"""Apps used by the functional tests, with hooks that record what the models did."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import numpy as np

from blazerpc import BlazeApp, BlazeError, Status, TensorInput, TensorOutput


@dataclass
class Token:
    token: str
    token_id: int


@dataclass
class Probe:
    """What the models saw: set when a generator's ``finally`` ran, and when."""

    finished: dict[str, float] = field(default_factory=dict)
    started: dict[str, threading.Event] = field(default_factory=dict)

    def event(self, key: str) -> threading.Event:
        return self.started.setdefault(key, threading.Event())


def make_app(probe: Probe | None = None) -> BlazeApp:
    probe = probe or Probe()
    app = BlazeApp("test")

    @app.model("echo")
    def echo(text: str, times: int = 1) -> str:
        return text * times

    @app.model("square")
    def square(x: float) -> float:
        return x * x  # 1e200 squared is inf, which JSON cannot carry

    @app.model("whoami")
    def whoami() -> int:
        return os.getpid()

    @app.model("add")
    async def add(a: int, b: int = 10) -> int:
        return a + b

    @app.model("scale")
    def scale(x: TensorInput[np.float32, "batch", 4], factor: float = 2.0) -> TensorOutput[np.float32, "batch", 4]:
        return x * np.float32(factor)

    @app.model("describe")
    def describe(values: list[int], label: str | None = None) -> Token:
        return Token(token=label or "none", token_id=sum(values))

    @app.model("fail")
    def fail(kind: str) -> str:
        if kind == "blaze":
            raise BlazeError(Status.NOT_FOUND, "no such thing")
        if kind == "exhausted":
            raise BlazeError(Status.RESOURCE_EXHAUSTED, "queue is full")
        raise ValueError("boom")

    @app.model("sleep")
    async def sleep(seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        finally:
            probe.finished["sleep"] = time.monotonic()
        return "slept"

    @app.model("generate", streaming=True)
    async def generate(prompt: str, n: int = 5, delay: float = 0.0) -> AsyncIterator[Token]:
        probe.event("generate").set()
        try:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                yield Token(token=f"{prompt}{i}", token_id=i)
        finally:
            probe.finished["generate"] = time.monotonic()

    @app.model("generate_sync", streaming=True)
    def generate_sync(prompt: str, n: int = 5, delay: float = 0.0) -> Iterator[str]:
        probe.event("generate_sync").set()
        try:
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield f"{prompt}{i}"
        finally:
            probe.finished["generate_sync"] = time.monotonic()

    @app.model("busy", streaming=True)
    async def busy(n: int) -> AsyncIterator[int]:
        for i in range(n):  # never awaits: the server must still give the loop turns
            yield i

    @app.model("fail_midway", streaming=True)
    async def fail_midway(n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield str(i)
        raise RuntimeError("broke after the first chunks")

    return app


app = make_app()
