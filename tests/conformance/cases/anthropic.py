"""Anthropic Messages API: the native fake renders the shared brain's plans as Anthropic events."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.anthropic_upstream import FakeAnthropic

KEY = "sk-ant-conformance-0001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeAnthropic)
    return {"apikey": KEY, "base_url": fake.base_url}


CASE = ProviderCase(type="anthropic", make_fake=lambda: FakeAnthropic(api_key=KEY), provider_data=_data)
