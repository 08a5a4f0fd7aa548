"""IBM watsonx.ai. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.pending import PendingAdapter


class WatsonxSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    project_id: str | None = arg("project_id", "projectID", "projectId", default=None)
    space_id: str | None = arg("space_id", "spaceID", "spaceId", default=None)
    base_url: str = url("base_url", "baseURL", default="https://us-south.ml.cloud.ibm.com")
    auth_url: str = url("auth_url", "authURL", default="https://iam.cloud.ibm.com/identity/token")
    api_version: str = arg("api_version", "apiVersion", default="2024-10-17")

    @model_validator(mode="after")
    def _one_scope(self) -> WatsonxSettings:
        if (self.project_id is None) == (self.space_id is None):
            raise ValueError("exactly one of project_id or space_id is required")
        return self


WATSONX = ProviderSpec("watsonxai", WatsonxSettings, PendingAdapter)
