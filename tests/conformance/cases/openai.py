"""OpenAI (and OpenAI-compatible servers): the reference case."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.openai_upstream import FakeOpenAI

KEY = "sk-conformance-openai-0001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeOpenAI)
    return {"apikey": KEY, "base_url": fake.base_url}


CASE = ProviderCase(type="openai", make_fake=lambda: FakeOpenAI(api_key=KEY), provider_data=_data)
