"""Pieces shared by chat, completions and embeddings."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Base(msgspec.Struct, kw_only=True):
    """Fields left UNSET are omitted from JSON; fields set to None are written as null."""


class PromptTokensDetails(Base):
    cached_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(Base):
    reasoning_tokens: int | UnsetType = UNSET
    audio_tokens: int | UnsetType = UNSET
    accepted_prediction_tokens: int | UnsetType = UNSET
    rejected_prediction_tokens: int | UnsetType = UNSET


class Usage(Base):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET


class StreamOptions(Base):
    include_usage: bool | None = None


Stop = str | list[str] | None
Extras = dict[str, Any]
"""Request fields the gateway does not model, passed to providers that accept them.
Values are `msgspec.Raw` (still-encoded JSON) on the REST path, plain values on gRPC."""
