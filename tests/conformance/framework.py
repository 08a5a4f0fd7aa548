"""The shared provider conformance suite's plumbing.

Every provider adapter plugs in with one module in `cases/` that defines `CASE`: how to start a
fake of the provider's real wire format on loopback, and the provider `data` that points the
gateway at it. Fakes share the behaviour of `tests.fakes.openai_upstream` (they translate their
native request into its OpenAI-shaped `plan_chat` and render the plan natively), so one set of
assertions holds for all: replies echo the last user message ("Echo: …", "[images: N]" for
images), "weather in Paris" triggers a get_weather call, "Paris and Tokyo" two parallel calls,
and models named error-<status>, slow-stream, midstream-drop and garbage are failure scenarios.
Which cases apply comes from the adapter's capability table (`Provider.capabilities`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelyard.providers.base import Capability
from modelyard.providers.registry import PROVIDER_TYPES

from tests.fakes.openai_upstream import RecordedRequest

SCENARIOS = (
    "error-400",
    "error-401",
    "error-403",
    "error-404",
    "error-429",
    "error-500",
    "error-503",
    "error-529",
    "slow-stream",
    "midstream-drop",
    "garbage",
)


class Fake(Protocol):
    requests: list[RecordedRequest]
    cancelled_streams: list[str]

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def clear(self) -> None: ...


@dataclass(frozen=True)
class ProviderCase:
    type: str
    """The provider type as registered (`PROVIDER_TYPES`)."""
    make_fake: Callable[[], Fake]
    provider_data: Callable[[Fake], dict[str, Any]]
    """The provider's `data`, pointing at the started fake."""
    chat_model: str = "conformance-chat"
    embedding_model: str = "conformance-embed"
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the gateway process (e.g. token endpoints)."""
    skip: dict[str, str] = field(default_factory=dict)
    """Case name → why it does not apply beyond the capability table (documented, not silent)."""
    variant: str = ""
    """Distinguishes several cases of one type (e.g. the model families behind Bedrock)."""

    @property
    def name(self) -> str:
        """The provider's name in the gateway's config, and the cases' test id."""
        return f"{self.type}-{self.variant}" if self.variant else self.type

    @property
    def capabilities(self) -> frozenset[Capability]:
        return PROVIDER_TYPES[self.type].adapter.capabilities

    def alias(self, model: str) -> str:
        return f"{self.name}/{model}"


def discover() -> list[ProviderCase]:
    from tests.conformance import cases

    found = []
    for info in sorted(pkgutil.iter_modules(cases.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{cases.__name__}.{info.name}")
        found += getattr(module, "CASES", None) or [module.CASE]
    return found


def models_for(case: ProviderCase) -> list[dict[str, Any]]:
    """The config `models` entries of one provider: its chat and embedding models and scenarios."""
    entries = [{"provider": case.name, "id": case.chat_model, "alias": case.alias("chat")}]
    if Capability.EMBEDDINGS in case.capabilities:
        entries.append({"provider": case.name, "id": case.embedding_model, "alias": case.alias("embed")})
    entries += [{"provider": case.name, "id": s, "alias": case.alias(s)} for s in SCENARIOS]
    return entries
