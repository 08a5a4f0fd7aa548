"""Reusable settings fields, with the spellings IBM's gateway accepts for each argument."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field

URL_PATTERN = r"^https?://[^\s]+$"


def arg(*spellings: str, default: Any = ..., pattern: str | None = None, **kwargs: Any) -> Any:
    """A settings field read from any of `spellings` (the first is the canonical name)."""
    return Field(default=default, validation_alias=AliasChoices(*spellings), pattern=pattern, **kwargs)


def url(*spellings: str, default: Any = ...) -> Any:
    return arg(*spellings, default=default, pattern=URL_PATTERN)


def argument_spellings(settings: type[BaseModel]) -> dict[str, str]:
    """Every accepted spelling of each argument → its canonical name."""
    spellings: dict[str, str] = {}
    for name, info in settings.model_fields.items():
        spellings[name] = name
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                spellings[choice] = name
    return spellings
