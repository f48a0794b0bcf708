"""The registry: plain data describing every model, read by both transports."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .schema import Signature, TypeSpec


def camel(name: str) -> str:
    """``"iris-classifier"`` -> ``"IrisClassifier"``: the stem of the RPC and message names."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9a-zA-Z]+", name) if part)


@dataclass(frozen=True)
class BatchConfig:
    """How requests to one model are gathered into batches."""

    max_batch_size: int = 32
    batch_timeout_ms: float = 5.0
    max_queue_size: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_ms < 0:
            raise ValueError(f"batch_timeout_ms must be >= 0, got {self.batch_timeout_ms}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its function, schema and serving options."""

    name: str
    fn: Callable[..., Any]
    signature: Signature
    version: str = "1"
    streaming: bool = False
    batch: BatchConfig | None = None
    description: str = ""
    #: For a streaming model: turns the list of chunks into the answer of a non-streaming
    #: HTTP call (by default ``{"chunks": [...]}``), with ``collect_output`` its schema.
    collect: Callable[[list[Any]], Any] | None = None
    collect_output: TypeSpec | None = None

    @property
    def camel(self) -> str:
        return camel(self.name)

    @functools.cached_property
    def is_coroutine(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@dataclass
class Registry:
    """``{name: ModelInfo}`` in registration order."""

    models: dict[str, ModelInfo] = field(default_factory=dict)

    def add(self, info: ModelInfo) -> None:
        if info.name in self.models:
            raise ValueError(f"a model named {info.name!r} is already registered")
        if not re.fullmatch(r"[A-Za-z][0-9A-Za-z_-]*", info.name):
            raise ValueError(
                f"model name {info.name!r} must start with a letter and hold only letters, digits, '_' and '-'"
            )
        clash = [m.name for m in self.models.values() if m.camel == info.camel]
        if clash:
            raise ValueError(f"model names {clash[0]!r} and {info.name!r} map to the same RPC name Predict{info.camel}")
        self.models[info.name] = info

    def __getitem__(self, name: str) -> ModelInfo:
        return self.models[name]

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self.models
