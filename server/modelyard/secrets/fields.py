"""Which provider arguments are secret: the settings fields typed pydantic.SecretStr."""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AliasChoices, AliasPath, BaseModel, SecretStr


def secret_fields(settings_model: type[BaseModel]) -> frozenset[str]:
    """Names of the fields typed SecretStr, SecretStr | None, or any union with SecretStr."""
    return frozenset(
        name for name, info in settings_model.model_fields.items() if _is_secret(info.annotation)
    )


def secret_spellings(settings_model: type[BaseModel]) -> dict[str, str]:
    """Every input key that sets a secret field (its name and plain aliases), to the field name.

    Provider arguments arrive under any accepted spelling ("apiKey", "api_key"), and each of them
    must be sealed, not only the canonical name.
    """
    spellings: dict[str, str] = {}
    for name in secret_fields(settings_model):
        info = settings_model.model_fields[name]
        spellings[name] = name
        for alias in _aliases(info.alias, info.validation_alias):
            spellings[alias] = name
    return spellings


def _aliases(alias: str | None, validation_alias: str | AliasPath | AliasChoices | None) -> list[str]:
    found = [alias] if alias else []
    if isinstance(validation_alias, str):
        found.append(validation_alias)
    elif isinstance(validation_alias, AliasChoices):
        found.extend(choice for choice in validation_alias.choices if isinstance(choice, str))
    return found


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_secret(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_is_secret(arm) for arm in get_args(annotation))
    return False
