"""A deployment: one model id on one provider, reachable under a name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.providers.base import Provider


@dataclass(frozen=True, eq=False)
class Deployment:
    alias: str
    model_id: str
    provider: Provider
    weight: int = 1
    tasks: frozenset[str] | None = None
    """What it serves; None means whatever its provider supports."""
    key: str = ""
    """Identifies it for health tracking across config reloads (tenant, provider id, model id)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Request parameters applied when the client does not send them."""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", f"{self.provider.name}/{self.model_id}")

    def serves(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    @property
    def label(self) -> str:
        """What response headers and the admin API call it: provider name / model id."""
        return f"{self.provider.name}/{self.model_id}"
