"""Databricks Model Serving: OpenAI shapes on per-endpoint invocation URLs."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.databricks_upstream import FakeDatabricks

TOKEN = "dapi-conformance-0001"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeDatabricks)
    return {"host": fake.base_url, "token": TOKEN}


CASE = ProviderCase(
    type="databricks-model-serving", make_fake=lambda: FakeDatabricks(token=TOKEN), provider_data=_data
)
