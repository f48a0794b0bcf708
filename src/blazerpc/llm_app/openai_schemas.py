"""Request bodies of the OpenAI-compatible routes (the fields the ``openai`` SDK and vLLM send)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import shorten


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
    """One message; ``content`` may be a string or a list of text parts (as the ``openai`` SDK
    and LangChain send), joined with newlines as vLLM joins them."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("role", mode="before")
    @classmethod
    def refuse_tools(cls, role: Any) -> Any:
        if role in ("tool", "function"):
            raise ValueError(f"role {role!r} is not supported: this server does not implement tools")
        return role

    @field_validator("content", mode="before")
    @classmethod
    def join_text_parts(cls, content: Any) -> Any:
        if not isinstance(content, list):
            return content
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(f"only text content parts are supported, got {_part_kind(part, kind)}")
            if not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs a string 'text'")
            texts.append(part["text"])
        return "\n".join(texts)


def _part_kind(part: Any, kind: Any) -> str:
    if kind is not None:
        return f"type {shorten(str(kind))!r}"
    return "a part with no type" if isinstance(part, dict) else f"a {type(part).__name__}"


class ChatRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, description="default: the rest of the context")
    max_completion_tokens: int | None = Field(None, description="the newer name of max_tokens")

    def template_messages(self) -> list[dict[str, str]]:
        """The messages as the chat template reads them. ``developer`` is OpenAI's newer name for
        ``system`` (it treats them alike for models without the distinction), and templates know
        only ``system``."""
        roles = {"developer": "system"}
        return [{"role": roles.get(m.role, m.role), "content": m.content} for m in self.messages]
