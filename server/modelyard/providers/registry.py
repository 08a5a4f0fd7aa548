"""Provider type name → spec. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from modelyard.providers.ai21 import AI21
from modelyard.providers.anthropic import ANTHROPIC
from modelyard.providers.azure_openai import AZURE_OPENAI
from modelyard.providers.base import ProviderSpec
from modelyard.providers.bedrock import BEDROCK
from modelyard.providers.cohere import COHERE
from modelyard.providers.databricks import DATABRICKS
from modelyard.providers.demo import DEMO
from modelyard.providers.gemini import GEMINI
from modelyard.providers.openai import CEREBRAS, NIM, OPENAI
from modelyard.providers.vertex import VERTEX
from modelyard.providers.watsonx import WATSONX

PROVIDER_TYPES: Mapping[str, ProviderSpec] = MappingProxyType(
    {
        spec.type_name: spec
        for spec in (
            OPENAI,
            CEREBRAS,
            NIM,
            DEMO,
            ANTHROPIC,
            AZURE_OPENAI,
            WATSONX,
            BEDROCK,
            COHERE,
            VERTEX,
            DATABRICKS,
            AI21,
            GEMINI,
        )
    }
)
