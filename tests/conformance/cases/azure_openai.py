"""Azure OpenAI, authenticated with Microsoft Entra ID client credentials against the fake tenant."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.azure_upstream import FakeAzureOpenAI


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeAzureOpenAI)
    return {
        "resource_name": "conformance",
        "base_url": fake.base_url,
        "api_version": "2024-10-21",
        "entra_tenant_id": fake.tenant_id,
        "entra_client_id": fake.client_id,
        "entra_client_secret": fake.client_secret,
        "entra_authority": fake.base_url,
    }


CASE = ProviderCase(type="azure-openai", make_fake=lambda: FakeAzureOpenAI(api_key=None), provider_data=_data)
