"""Google Vertex AI: service-account OAuth against the fake's token endpoint, Gemini for chat and a
text-embedding model for embeddings, and Claude (rawPredict with the Anthropic body) as a second case;
failure scenarios are model ids without the "claude" prefix, so they exercise the Gemini path."""

from __future__ import annotations

import json
from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.vertex_upstream import FakeVertex, generate_key, service_account_info

KEY = generate_key()


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeVertex)
    return {
        "private_key": json.dumps(service_account_info(fake, KEY)),
        "region": fake.region,
        "project_id": fake.project,
        "base_url": fake.base_url,
    }


CASES = [
    ProviderCase(
        type="google-cloud-vertex-ai",
        make_fake=lambda: FakeVertex(KEY.public_key()),
        provider_data=_data,
        chat_model="gemini-2.0-flash",
        embedding_model="text-embedding-005",
    ),
    ProviderCase(
        type="google-cloud-vertex-ai",
        variant="claude",
        make_fake=lambda: FakeVertex(KEY.public_key()),
        provider_data=_data,
        chat_model="claude-sonnet-4-5",
        embedding_model="text-embedding-005",
    ),
]
