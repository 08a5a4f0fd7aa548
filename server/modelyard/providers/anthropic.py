"""Anthropic Messages API. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.pending import PendingAdapter


class AnthropicSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", default="https://api.anthropic.com")


ANTHROPIC = ProviderSpec("anthropic", AnthropicSettings, PendingAdapter)
