"""IBM watsonx.ai: IAM token exchange and the `/ml/v1/text/*` API, against one fake of both."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.watsonx_upstream import FakeWatsonx

KEY = "ibm-conformance-apikey-0001"
PROJECT = "conformance-project"


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeWatsonx)
    return {"apikey": KEY, "project_id": PROJECT, "base_url": fake.base_url, "auth_url": fake.iam_url}


CASE = ProviderCase(
    type="watsonxai",
    make_fake=lambda: FakeWatsonx(apikey=KEY, project_id=PROJECT),
    provider_data=_data,
)
