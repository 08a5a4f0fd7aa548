"""Embeddings in OpenAI's shapes."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, UnsetType, field

from modelyard.schema.common import Base, Extras

EmbeddingInput = str | list[Any]
"""A string, or a list of strings, of token ids, or of token-id lists (checked by validate)."""


class EmbeddingRequest(Base):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    dimensions: int | UnsetType = UNSET
    user: str | UnsetType = UNSET
    extras: Extras = field(default_factory=dict, name="$extras")


class Embedding(Base):
    index: int
    embedding: list[float] | str
    """Floats, or base64 of little-endian float32 when `encoding_format` is "base64"."""
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(Base):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(Base):
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage = field(default_factory=EmbeddingUsage)
    object: Literal["list"] = "list"
