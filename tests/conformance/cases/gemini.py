"""The Gemini API (Google AI Studio): an API key in `x-goog-api-key`, generateContent for chat,
embedContent / batchEmbedContents for embeddings, against the loopback fake."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.gemini_upstream import FakeGemini

KEY = "AIzaConformanceGemini000000000000000001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeGemini)
    return {"apikey": KEY, "base_url": fake.base_url}


CASE = ProviderCase(
    type="gemini",
    make_fake=lambda: FakeGemini(api_key=KEY),
    provider_data=_data,
    chat_model="gemini-2.0-flash",
    embedding_model="text-embedding-004",
)
