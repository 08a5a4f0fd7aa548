"""Legacy text completions in OpenAI's shapes."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, UnsetType, field

from modelyard.schema.chat import FinishReason
from modelyard.schema.common import Base, Extras, Stop, StreamOptions, Usage

Prompt = str | list[Any]
"""A string, or a list of strings, of token ids, or of token-id lists (checked by validate)."""


class CompletionRequest(Base):
    model: str
    prompt: Prompt
    stream: bool | None = None
    stream_options: StreamOptions | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    top_k: int | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: Stop | UnsetType = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: int | UnsetType | None = UNSET
    echo: bool | UnsetType | None = UNSET
    best_of: int | UnsetType | None = UNSET
    suffix: str | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    extras: Extras = field(default_factory=dict, name="$extras")

    @property
    def include_usage(self) -> bool:
        options = self.stream_options
        return isinstance(options, StreamOptions) and bool(options.include_usage)


class CompletionLogprobs(Base):
    tokens: list[str] | UnsetType = UNSET
    token_logprobs: list[float] | UnsetType = UNSET
    top_logprobs: list[dict[str, float]] | UnsetType = UNSET
    text_offset: list[int] | UnsetType = UNSET


class CompletionChoice(Base):
    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(Base):
    """A completion, or one chunk of a streamed completion (OpenAI uses one shape for both)."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: Literal["text_completion"] = "text_completion"
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
