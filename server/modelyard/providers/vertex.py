"""Google Vertex AI. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg
from modelyard.providers.pending import PendingAdapter


class VertexSettings(ProviderSettings):
    private_key: SecretStr = arg("private_key", "privateKey")
    """The service-account key file's JSON (or a reference to it)."""
    region: str = arg("region", pattern=r"^[a-z]+(-[a-z0-9]+)+$")
    project_id: str = arg("project_id", "projectID", "projectId", pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")


VERTEX = ProviderSpec("google-cloud-vertex-ai", VertexSettings, PendingAdapter)
