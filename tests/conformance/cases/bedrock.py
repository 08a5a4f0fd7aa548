"""AWS Bedrock: the native fake verifies each request's SigV4 signature and speaks Converse,
ConverseStream (AWS event-stream frames) and InvokeModel (Titan and Cohere embeddings). Three
cases: the default model id with Titan v2 embeddings, Claude with Titan v1, Cohere Command R+
with Cohere Embed."""

from __future__ import annotations

from typing import Any

from tests.conformance.framework import Fake, ProviderCase
from tests.fakes.bedrock_upstream import ACCESS_KEY, SECRET_KEY, FakeBedrock


def _data(fake: Fake) -> dict[str, Any]:
    assert isinstance(fake, FakeBedrock)
    return {
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "region": "us-east-1",
        "base_url": fake.base_url,
    }


CASES = [
    ProviderCase(
        type="bedrock",
        make_fake=FakeBedrock,
        provider_data=_data,
        embedding_model="amazon.titan-embed-text-v2:0",
    ),
    ProviderCase(
        type="bedrock",
        variant="claude",
        make_fake=FakeBedrock,
        provider_data=_data,
        chat_model="anthropic.claude-3-7-sonnet-20250219-v1:0",
        embedding_model="amazon.titan-embed-text-v1",
    ),
    ProviderCase(
        type="bedrock",
        variant="cohere",
        make_fake=FakeBedrock,
        provider_data=_data,
        chat_model="cohere.command-r-plus-v1:0",
        embedding_model="cohere.embed-english-v3",
    ),
]
