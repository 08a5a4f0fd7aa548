"""The models list in OpenAI's shape, with the providers behind each alias as an extra field."""

from __future__ import annotations

from typing import Literal

from msgspec import field

from modelyard.schema.common import Base


class ModelCard(Base):
    id: str
    created: int
    owned_by: str
    providers: list[str] = field(default_factory=list)
    object: Literal["model"] = "model"


class ModelList(Base):
    data: list[ModelCard]
    object: Literal["list"] = "list"
