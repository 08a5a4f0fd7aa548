"""Reusable settings fields, with the spellings IBM's gateway accepts for each argument."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

URL_PATTERN = r"^https?://[^\s]+$"


def arg(*spellings: str, default: Any = ..., pattern: str | None = None, **kwargs: Any) -> Any:
    """A settings field read from any of `spellings` (the first is the canonical name)."""
    return Field(default=default, validation_alias=AliasChoices(*spellings), pattern=pattern, **kwargs)


def url(*spellings: str, default: Any = ...) -> Any:
    return arg(*spellings, default=default, pattern=URL_PATTERN)
