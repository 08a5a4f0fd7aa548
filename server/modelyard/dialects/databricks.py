"""Databricks serving-endpoint configs (`served_entities` of external models with a
`traffic_config`) → what Modelyard stores and routes. Pure: no I/O, no secrets resolved.

Errors name the place in the config (`served_entities[1].external_model.openai_config: …`), never
a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.dialects.external import TASKS, TRANSLATORS, DialectError, Task, Translated, serves, translate

ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
"""Databricks' rule for serving-endpoint names: letters, digits, `-` and `_`, at most 63."""
ENTITY_NAME = ENDPOINT_NAME
MAX_ENTITIES = 15
ENTITY_KEYS = frozenset({"name", "external_model"})
MODEL_KEYS = frozenset({"name", "provider", "task"})


def config_key(provider: str) -> str:
    """Where an external model's provider settings live: `amazon-bedrock` → `amazon_bedrock_config`."""
    return provider.replace("-", "_") + "_config"


@dataclass(frozen=True)
class ServedModel:
    name: str
    provider: str
    """As Databricks spells it (`openai`, `amazon-bedrock`, …)."""
    task: Task
    model_name: str
    config: Mapping[str, Any]
    """The `<provider>_config` as given (credentials included)."""
    translated: Translated

    @property
    def upstream_model(self) -> str:
        return self.translated.upstream_model(self.model_name)


@dataclass(frozen=True)
class EndpointSpec:
    entities: tuple[ServedModel, ...]
    routes: tuple[tuple[str, int], ...]
    """(served entity name, traffic percentage), summing to 100."""


def parse_endpoint_config(config: Any) -> EndpointSpec:
    if not isinstance(config, Mapping):
        raise DialectError("config must be an object with served_entities and traffic_config")
    unknown = set(config) - {"served_entities", "traffic_config"}
    if unknown:
        raise DialectError(
            f"config: unknown key {sorted(unknown)[0]!r} (known: served_entities, traffic_config)"
        )
    entities = config.get("served_entities")
    if not isinstance(entities, list) or not 1 <= len(entities) <= MAX_ENTITIES:
        raise DialectError(f"config.served_entities: give 1 to {MAX_ENTITIES} served entities")
    served = tuple(_entity(f"served_entities[{i}]", entity) for i, entity in enumerate(entities))
    names = [entity.name for entity in served]
    if len(set(names)) != len(names):
        raise DialectError("config.served_entities: entity names must be unique")
    tasks = {entity.task for entity in served}
    if len(tasks) > 1:
        raise DialectError("config.served_entities: every served entity must have the same task")
    return EndpointSpec(served, _routes(config.get("traffic_config"), names))


def _entity(path: str, entity: Any) -> ServedModel:
    if not isinstance(entity, Mapping):
        raise DialectError(f"{path}: must be an object")
    if unknown := set(entity) - ENTITY_KEYS:
        what = (
            "served models of this workspace are not supported" if "entity_name" in unknown else "unknown key"
        )
        raise DialectError(f"{path}: {what} ({sorted(unknown)[0]!r}); give name and external_model")
    name = entity.get("name")
    if not isinstance(name, str) or not ENTITY_NAME.fullmatch(name):
        raise DialectError(f"{path}.name: use 1-63 letters, digits, '-' and '_'")
    model = entity.get("external_model")
    if not isinstance(model, Mapping):
        raise DialectError(f"{path}.external_model: required, an object")
    return _external_model(f"{path}.external_model", name, model)


def _external_model(path: str, name: str, model: Mapping[str, Any]) -> ServedModel:
    for key in MODEL_KEYS:
        if not isinstance(model.get(key), str) or not model[key]:
            raise DialectError(f"{path}.{key}: required, a non-empty string")
    provider, task_name = model["provider"], model["task"]
    task = TASKS.get(task_name)
    if task is None:
        raise DialectError(f"{path}.task: must be one of {', '.join(TASKS)}")
    if provider not in TRANSLATORS:
        raise DialectError(
            f"{path}.provider: unsupported provider {provider!r} (supported: {', '.join(sorted(TRANSLATORS))})"
        )
    expected = config_key(provider)
    extra = set(model) - MODEL_KEYS - {expected}
    if extra:
        raise DialectError(f"{path}: unexpected key {sorted(extra)[0]!r} for provider {provider!r}")
    settings = model.get(expected)
    if not isinstance(settings, Mapping):
        raise DialectError(f"{path}.{expected}: required for provider {provider!r}, an object")
    try:
        translated = translate(provider, settings)
    except DialectError as exc:
        raise DialectError(f"{path}.{expected}: {exc}") from None
    if not serves(translated.type_name, task):
        raise DialectError(f"{path}.task: provider {provider!r} does not serve {task_name}")
    return ServedModel(name, provider, task, model["name"], dict(settings), translated)


def _routes(traffic: Any, names: list[str]) -> tuple[tuple[str, int], ...]:
    if traffic is None or traffic == {}:
        if len(names) == 1:
            return ((names[0], 100),)
        raise DialectError("config.traffic_config: required with more than one served entity")
    routes = traffic.get("routes") if isinstance(traffic, Mapping) else None
    if not isinstance(routes, list) or not routes:
        raise DialectError(
            "config.traffic_config.routes: give a list of {served_model_name, traffic_percentage}"
        )
    parsed: list[tuple[str, int]] = []
    for i, route in enumerate(routes):
        path = f"config.traffic_config.routes[{i}]"
        target = route.get("served_model_name") if isinstance(route, Mapping) else None
        share = route.get("traffic_percentage") if isinstance(route, Mapping) else None
        if target not in names:
            raise DialectError(f"{path}.served_model_name: names no served entity (have: {', '.join(names)})")
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
            raise DialectError(f"{path}.traffic_percentage: an integer from 0 to 100")
        parsed.append((target, share))
    if len({target for target, _ in parsed}) != len(parsed):
        raise DialectError("config.traffic_config.routes: each served entity at most once")
    total = sum(share for _, share in parsed)
    if total != 100:
        raise DialectError(f"config.traffic_config.routes: traffic percentages sum to {total}, not 100")
    return tuple(parsed)
