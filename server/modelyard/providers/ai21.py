"""AI21 Labs. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.pending import PendingAdapter


class AI21Settings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", default="https://api.ai21.com/studio/v1")


AI21 = ProviderSpec("ai21labs", AI21Settings, PendingAdapter)
