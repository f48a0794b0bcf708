"""Request bodies of the OpenAI-compatible routes (the fields the ``openai`` SDK and vLLM send)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI fields not implemented here: accepted at their neutral values (clients send them), else refused.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "echo": (False,),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
}


class OpenAIRequest(BaseModel):
    """Fields both endpoints share; unknown fields are refused, not ignored. Sampling values are
    checked where the engine defines them (``SamplingParams``); OpenAI's own caps are here."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(1.0, le=2)
    top_p: float = 1.0
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    top_k: int = Field(0, description="vLLM's extension: keep the k most likely tokens (0: all)")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate past the end-of-sequence token")
    frequency_penalty: float = 0
    presence_penalty: float = 0
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def refuse_unimplemented(self) -> Self:
        for name, neutral in NEUTRAL.items():
            if getattr(self, name) not in neutral:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported here (accepted: {neutral})")
        return self

    def sampling(self) -> dict[str, Any]:
        """The ``SamplingParams`` fields this request sets (by keyword, for the front door)."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": tuple(stop),
            "ignore_eos": self.ignore_eos,
        }


class CompletionRequest(OpenAIRequest):
    prompt: str = Field(min_length=1)
    max_tokens: int = 16


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, description="default: the rest of the context")
    max_completion_tokens: int | None = Field(None, description="the newer name of max_tokens")
