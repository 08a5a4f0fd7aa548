"""Azure OpenAI. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg
from modelyard.providers.pending import PendingAdapter


class AzureOpenAISettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    resource_name: str = arg("resource_name", "resourceName", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    subscription_id: str | None = arg("subscription_id", "subscriptionID", "subscriptionId", default=None)
    resource_group_name: str | None = arg("resource_group_name", "resourceGroupName", default=None)
    account_name: str | None = arg("account_name", "accountName", default=None)
    api_version: str = arg("api_version", "apiVersion", default="2024-10-21")


AZURE_OPENAI = ProviderSpec("azure-openai", AzureOpenAISettings, PendingAdapter)
