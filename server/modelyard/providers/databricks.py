"""Databricks Model Serving. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.pending import PendingAdapter


class DatabricksSettings(ProviderSettings):
    host: str = url("host", "workspace_url", "databricks_workspace_url")
    token: SecretStr = arg("token", "databricks_api_token")


DATABRICKS = ProviderSpec("databricks-model-serving", DatabricksSettings, PendingAdapter)
