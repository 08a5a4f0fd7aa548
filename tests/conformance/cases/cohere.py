"""Cohere: chat over /v2/chat, embeddings over /v2/embed, completions over /v1/generate."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.cohere_upstream import FakeCohere

KEY = "co-conformance-cohere-0001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeCohere)
    return {"apikey": KEY, "base_url": fake.base_url}


CASE = ProviderCase(type="cohere", make_fake=lambda: FakeCohere(api_key=KEY), provider_data=_data)
