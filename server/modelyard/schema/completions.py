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
    stream_options: StreamOptions | None | UnsetType = UNSET
    max_tokens: int | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    top_k: int | None | UnsetType = UNSET
    n: int | None | UnsetType = UNSET
    stop: Stop | UnsetType = UNSET
    presence_penalty: float | None | UnsetType = UNSET
    frequency_penalty: float | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    logprobs: int | None | UnsetType = UNSET
    echo: bool | None | UnsetType = UNSET
    best_of: int | None | UnsetType = UNSET
    suffix: str | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
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
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET
