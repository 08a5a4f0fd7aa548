"""AI21 Labs (Jamba): OpenAI-like chat, text only, no completions or embeddings."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.ai21_upstream import FakeAI21

KEY = "ai21-conformance-key-0001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeAI21)
    return {"apikey": KEY, "base_url": fake.base_url}


CASE = ProviderCase(type="ai21labs", make_fake=lambda: FakeAI21(api_key=KEY), provider_data=_data)
