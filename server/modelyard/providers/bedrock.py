"""AWS Bedrock. Settings only in this version; the adapter comes with the native providers."""

from __future__ import annotations

from pydantic import SecretStr

from modelyard.providers.base import ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg
from modelyard.providers.pending import PendingAdapter


class BedrockSettings(ProviderSettings):
    access_key_id: str = arg("access_key_id", "accessKeyId", "accessKeyID", pattern=r"^[A-Z0-9]{16,128}$")
    secret_access_key: SecretStr = arg("secret_access_key", "secretAccessKey")
    region: str = arg("region", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    session_token: SecretStr | None = arg("session_token", "sessionToken", default=None)


BEDROCK = ProviderSpec("bedrock", BedrockSettings, PendingAdapter)
