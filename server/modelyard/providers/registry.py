"""Provider type name → spec. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from modelyard.providers.base import ProviderSpec
from modelyard.providers.demo import DEMO
from modelyard.providers.openai import CEREBRAS, NIM, OPENAI

PROVIDER_TYPES: Mapping[str, ProviderSpec] = MappingProxyType(
    {spec.type_name: spec for spec in (OPENAI, CEREBRAS, NIM, DEMO)}
)
