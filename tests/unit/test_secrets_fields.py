"""Which provider settings fields are secret: those typed pydantic.SecretStr."""

from __future__ import annotations

from typing import Annotated, Optional, Union

import pytest
from modelyard.providers.openai import OpenAISettings
from modelyard.secrets.fields import secret_fields, secret_spellings
from pydantic import AliasChoices, AliasPath, BaseModel, Field, SecretBytes, SecretStr


class Mixed(BaseModel):
    apikey: SecretStr
    session_token: SecretStr | None = None
    legacy_token: Optional[SecretStr] = None  # noqa: UP045
    either: Union[SecretStr, int] = 0  # noqa: UP007
    private_key: Annotated[SecretStr, Field(min_length=1)] = SecretStr("x")
    client_secret: SecretStr = Field(
        default=SecretStr("x"),
        validation_alias=AliasChoices("client_secret", "clientSecret", AliasPath("auth", "secret")),
    )
    aliased: SecretStr = Field(default=SecretStr("x"), alias="aliasedSecret")
    region: str = "us-east-1"
    count: int | None = None
    raw: SecretBytes = SecretBytes(b"")
    names: list[SecretStr] = []


class Plain(BaseModel):
    base_url: str
    organization: str | None = None


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (OpenAISettings, {"apikey"}),
        (
            Mixed,
            {"apikey", "session_token", "legacy_token", "either", "private_key", "client_secret", "aliased"},
        ),
        (Plain, set()),
    ],
)
def test_secret_fields(model: type[BaseModel], expected: set[str]) -> None:
    assert secret_fields(model) == frozenset(expected)


def test_secret_spellings_cover_every_accepted_input_key() -> None:
    assert secret_spellings(OpenAISettings) == {"apikey": "apikey", "apiKey": "apikey", "api_key": "apikey"}
    spellings = secret_spellings(Mixed)
    assert spellings["clientSecret"] == spellings["client_secret"] == "client_secret"
    assert spellings["aliasedSecret"] == spellings["aliased"] == "aliased"
    assert "region" not in spellings and "base_url" not in spellings
    assert set(spellings.values()) == secret_fields(Mixed)
