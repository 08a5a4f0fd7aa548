"""MLflow AI Gateway and Databricks "external model" provider configs → Modelyard provider arguments.

Both products spell a provider's settings the same way (`openai_api_key`, `aws_region`, …): MLflow
in `endpoints[].model.config`, Databricks in `served_entities[].external_model.<provider>_config`.
Databricks also accepts `X_plaintext` beside each credential `X` (exactly one may be given) and
writes secret references as `{{secrets/scope/key}}`; those are passed through unchanged, for the
secret resolver. One table maps each provider name to a small translator; nothing here does I/O.

Errors name the provider and the key, never a value: any value may be a credential.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from pydantic import ValidationError

from modelyard.providers.base import Capability
from modelyard.providers.registry import PROVIDER_TYPES

Task = Literal["chat", "completions", "embeddings"]
TASKS: Mapping[str, Task] = MappingProxyType(
    {"llm/v1/chat": "chat", "llm/v1/completions": "completions", "llm/v1/embeddings": "embeddings"}
)
"""MLflow endpoint types and Databricks tasks → Modelyard tasks."""

PARAMETERS: Mapping[str, tuple[type, ...]] = MappingProxyType(
    {
        "temperature": (int, float),
        "top_p": (int, float),
        "top_k": (int,),
        "max_tokens": (int,),
        "max_completion_tokens": (int,),
        "stop": (str, list),
        "presence_penalty": (int, float),
        "frequency_penalty": (int, float),
        "seed": (int,),
    }
)
"""Request parameters a config may set as defaults, with the types each accepts."""

PLAINTEXT = "_plaintext"


class DialectError(ValueError):
    """A provider config that cannot be translated; names the provider and key, never a value."""


@dataclass(frozen=True)
class Translated:
    type_name: str
    """A key of modelyard.providers.registry.PROVIDER_TYPES."""
    data: dict[str, Any]
    """The provider arguments, valid for the type's settings model."""
    defaults: dict[str, Any]
    """Request parameters found in the config, applied when the client does not send them."""
    model_id: str | None = None
    """The upstream model id when the config names it (Azure's deployment), replacing the model name."""
    model_prefix: str = ""
    """Put before a bare model name (Bedrock's `bedrock_provider`: `claude-v2` → `anthropic.claude-v2`)."""

    def upstream_model(self, name: str) -> str:
        """The model id to send upstream for the configured model `name`."""
        if self.model_id is not None:
            return self.model_id
        if self.model_prefix and "." not in name:
            return self.model_prefix + name
        return name


def parameter_problem(key: str, value: Any) -> str | None:
    """Why `key: value` is not a default request parameter, or None (the message omits the value)."""
    kinds = PARAMETERS.get(key)
    if kinds is None:
        return f"unknown default parameter {key!r} (known: {', '.join(PARAMETERS)})"
    if isinstance(value, bool) or not isinstance(value, kinds):
        return f"default parameter {key!r} has the wrong type"
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        return f"default parameter {key!r} must be a string or a list of strings"
    return None


def serves(type_name: str, task: str) -> bool:
    """Whether the adapter of `type_name` serves `task` (chat, completions or embeddings)."""
    spec = PROVIDER_TYPES.get(type_name)
    return spec is not None and Capability(task) in spec.adapter.capabilities


def is_secret_reference(value: Any) -> bool:
    """A Databricks secret reference, `{{secrets/scope/key}}`."""
    return isinstance(value, str) and value.startswith("{{secrets/") and value.endswith("}}")


# ---- one provider's key table -------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one provider's config keys become one Modelyard provider type's arguments."""

    type_name: str
    arguments: Mapping[str, str] = field(default_factory=dict)
    """Plain key → settings argument."""
    credentials: Mapping[str, str] = field(default_factory=dict)
    """Key given as `X` (reference or value) or `X_plaintext` → settings argument."""
    required: tuple[str, ...] = ()
    """Keys (credentials by their base name) that must be present."""
    ignored: frozenset[str] = frozenset()
    """Accepted and dropped: they mean nothing to the Modelyard adapter."""
    refused: Mapping[str, str] = field(default_factory=dict)
    """Known keys Modelyard cannot honour here → why."""
    model_key: str | None = None
    """The key whose value is the upstream model id (Translated.model_id)."""
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Derives arguments the dialect does not spell (Azure's resource name)."""

    def source(self, argument: str) -> str:
        """The dialect key that sets `argument`, for error messages."""
        for table in (self.arguments, self.credentials):
            for key, target in table.items():
                if target == argument:
                    return key
        return argument


@dataclass
class _Reading:
    """The state of one translation: what has been read so far, and from where."""

    provider: str
    data: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    """The keys read, credentials by their base name."""
    model_id: str | None = None

    def fail(self, problem: str) -> DialectError:
        return DialectError(f"{self.provider} provider: {problem}")


def _read(reading: _Reading, dialect: Dialect, path: str, key: str, value: Any) -> None:
    base = key.removesuffix(PLAINTEXT)
    if key in PARAMETERS:
        if (problem := parameter_problem(key, value)) is not None:
            raise reading.fail(f"{path}: {problem}")
        reading.defaults[key] = value
    elif key in dialect.refused:
        raise reading.fail(f"{path}: {dialect.refused[key]}")
    elif key in dialect.ignored:
        return
    elif key == dialect.model_key:
        if not isinstance(value, str) or not value:
            raise reading.fail(f"{path}: must be a non-empty string")
        reading.model_id = value
    elif key in dialect.arguments:
        reading.data[dialect.arguments[key]] = value
    elif base in dialect.credentials:
        if base in reading.seen:
            raise reading.fail(f"give exactly one of {base} or {base}{PLAINTEXT}, not both")
        reading.data[dialect.credentials[base]] = value
    else:
        raise reading.fail(f"unknown key {path!r} (known: {', '.join(_known(dialect))})")
    reading.seen.add(base)


def _known(dialect: Dialect) -> list[str]:
    keys = [*dialect.arguments, *dialect.credentials, *(f"{k}{PLAINTEXT}" for k in dialect.credentials)]
    return sorted({*keys, *dialect.ignored, *([dialect.model_key] if dialect.model_key else [])})


def _check_required(reading: _Reading, dialect: Dialect) -> None:
    for key in dialect.required:
        if key not in reading.seen:
            either = f" or {key}{PLAINTEXT}" if key in dialect.credentials else ""
            raise reading.fail(f"{key}{either} is required")


def _validate(reading: _Reading, dialect: Dialect, resolved: bool) -> None:
    """Check the arguments against the type's settings; arguments given as an unresolved
    `{{secrets/…}}` reference are left to the resolver unless `resolved`."""
    try:
        PROVIDER_TYPES[dialect.type_name].settings.model_validate(reading.data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_input=False, include_url=False):
            argument = str(item["loc"][0]) if item["loc"] else ""
            if not resolved and argument and is_secret_reference(reading.data.get(argument)):
                continue
            kind = {"missing": "missing", "extra_forbidden": "unknown argument"}.get(
                item["type"], item["msg"]
            )
            problems.append(f"{dialect.source(argument)}: {kind}" if argument else kind)
        if problems:
            raise reading.fail("; ".join(problems)) from None


def _apply(provider: str, dialect: Dialect, items: list[tuple[str, str, Any]], resolved: bool) -> Translated:
    reading = _Reading(provider)
    for path, key, value in items:
        _read(reading, dialect, path, key, value)
    _check_required(reading, dialect)
    if dialect.finish is not None:
        reading.data = dialect.finish(reading.data)
    _validate(reading, dialect, resolved)
    return Translated(dialect.type_name, reading.data, reading.defaults, reading.model_id)


def _flat(config: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    return [(key, key, value) for key, value in config.items()]


# ---- the providers ------------------------------------------------------------------------------

Translator = Callable[[str, Mapping[str, Any], bool], Translated]


def _simple(dialect: Dialect) -> Translator:
    def translate_simple(provider: str, config: Mapping[str, Any], resolved: bool) -> Translated:
        return _apply(provider, dialect, _flat(config), resolved)

    return translate_simple


def _api_key(type_name: str, prefix: str, base_key: str | None = None) -> Dialect:
    """A provider configured by `{prefix}_api_key` and optionally a base URL."""
    arguments = {base_key: "base_url"} if base_key else {}
    key = f"{prefix}_api_key"
    return Dialect(type_name, arguments, {key: "apikey"}, required=(key,))


_OPENAI_KEYS = {"openai_api_key": "apikey"}
_ENTRA = {
    "microsoft_entra_tenant_id": "entra_tenant_id",
    "microsoft_entra_client_id": "entra_client_id",
}
_ENTRA_SECRET = {"microsoft_entra_client_secret": "entra_client_secret"}
_ENTRA_ONLY = "applies only to openai_api_type azuread"


def _azure_resource(data: dict[str, Any]) -> dict[str, Any]:
    """Azure's resource name is the first label of the endpoint's host."""
    base = data.get("base_url")
    host = base.split("://", 1)[-1].split("/", 1)[0].split(".", 1)[0] if isinstance(base, str) else ""
    return {**data, "resource_name": host} if host else data


def _azure(required: tuple[str, ...], refused: Mapping[str, str]) -> Dialect:
    return Dialect(
        "azure-openai",
        arguments={"openai_api_base": "base_url", "openai_api_version": "api_version", **_ENTRA},
        credentials={**_OPENAI_KEYS, **_ENTRA_SECRET},
        required=("openai_api_base", "openai_deployment_name", "openai_api_version", *required),
        ignored=frozenset({"openai_api_type", "openai_organization"}),
        refused=refused,
        model_key="openai_deployment_name",
        finish=_azure_resource,
    )


OPENAI_API_TYPES: Mapping[str, Dialect] = MappingProxyType(
    {
        "openai": Dialect(
            "openai",
            arguments={"openai_api_base": "base_url", "openai_organization": "organization"},
            credentials=_OPENAI_KEYS,
            required=("openai_api_key",),
            ignored=frozenset({"openai_api_type", "openai_api_version"}),
            refused={
                "openai_deployment_name": "applies only to openai_api_type azure or azuread",
                **{key: _ENTRA_ONLY for key in (*_ENTRA, *_ENTRA_SECRET)},
                **{f"{key}{PLAINTEXT}": _ENTRA_ONLY for key in _ENTRA_SECRET},
            },
        ),
        "azure": _azure(("openai_api_key",), {}),
        "azuread": _azure(
            ("microsoft_entra_tenant_id", "microsoft_entra_client_id", "microsoft_entra_client_secret"),
            {
                key: "with openai_api_type azuread Modelyard authenticates with microsoft_entra_tenant_id, "
                "microsoft_entra_client_id and microsoft_entra_client_secret (a static Azure AD token is "
                "not supported)"
                for key in ("openai_api_key", f"openai_api_key{PLAINTEXT}")
            },
        ),
    }
)
"""`openai_api_type` (case-insensitive) → its key table."""


def _openai(provider: str, config: Mapping[str, Any], resolved: bool) -> Translated:
    api_type = config.get("openai_api_type", "openai")
    dialect = OPENAI_API_TYPES.get(api_type.lower()) if isinstance(api_type, str) else None
    if dialect is None:
        choices = ", ".join(OPENAI_API_TYPES)
        raise DialectError(f"{provider} provider: openai_api_type must be one of {choices}")
    return _apply(provider, dialect, _flat(config), resolved)


BEDROCK_PROVIDERS: Mapping[str, str] = MappingProxyType(
    {"anthropic": "anthropic.", "cohere": "cohere.", "ai21labs": "ai21.", "amazon": "amazon."}
)
"""Databricks' `bedrock_provider` (case-insensitive) → the Bedrock model id prefix."""

_NO_ROLE = "assuming an IAM role is not supported; give aws_access_key_id and aws_secret_access_key"
BEDROCK = Dialect(
    "bedrock",
    arguments={"aws_region": "region"},
    credentials={
        "aws_access_key_id": "access_key_id",
        "aws_secret_access_key": "secret_access_key",
        "aws_session_token": "session_token",
    },
    required=("aws_region", "aws_access_key_id", "aws_secret_access_key"),
    ignored=frozenset({"bedrock_provider"}),
    refused={"aws_role_arn": _NO_ROLE, "session_length_seconds": _NO_ROLE},
)


def _bedrock(provider: str, config: Mapping[str, Any], resolved: bool) -> Translated:
    """Databricks spells the AWS keys flat; MLflow nests them in `aws_config`."""
    items = [item for item in _flat(config) if item[1] != "aws_config"]
    nested = config.get("aws_config", {})
    if not isinstance(nested, Mapping):
        raise DialectError(f"{provider} provider: aws_config must be a mapping")
    for key, value in nested.items():
        if key in config:
            raise DialectError(f"{provider} provider: {key} is given both in aws_config and beside it")
        items.append((f"aws_config.{key}", key, value))
    translated = _apply(provider, BEDROCK, items, resolved)
    family = config.get("bedrock_provider")
    if family is None:
        return translated
    prefix = BEDROCK_PROVIDERS.get(family.lower()) if isinstance(family, str) else None
    if prefix is None:
        choices = ", ".join(BEDROCK_PROVIDERS)
        raise DialectError(f"{provider} provider: bedrock_provider must be one of {choices}")
    return replace(translated, model_prefix=prefix)


TRANSLATORS: Mapping[str, Translator] = MappingProxyType(
    {
        "openai": _openai,
        "anthropic": _simple(
            Dialect(
                "anthropic",
                arguments={"anthropic_api_base": "base_url", "anthropic_version": "anthropic_version"},
                credentials={"anthropic_api_key": "apikey"},
                required=("anthropic_api_key",),
            )
        ),
        "cohere": _simple(_api_key("cohere", "cohere", "cohere_api_base")),
        "ai21labs": _simple(_api_key("ai21labs", "ai21labs")),
        "gemini": _simple(_api_key("gemini", "gemini")),
        "amazon-bedrock": _bedrock,
        "bedrock": _bedrock,
        "google-cloud-vertex-ai": _simple(
            Dialect(
                "google-cloud-vertex-ai",
                arguments={"region": "region", "project_id": "project_id"},
                credentials={"private_key": "private_key"},
                required=("private_key", "region", "project_id"),
            )
        ),
        "databricks-model-serving": _simple(
            Dialect(
                "databricks-model-serving",
                arguments={"databricks_workspace_url": "host"},
                credentials={"databricks_api_token": "token"},
                required=("databricks_workspace_url", "databricks_api_token"),
            )
        ),
    }
)
"""Provider names as MLflow and Databricks spell them → their translator."""


def translate(provider: str, config: Mapping[str, Any], *, resolved: bool = False) -> Translated:
    """The Modelyard provider type, arguments and default parameters of one provider config.

    `resolved` says secret references were already replaced by their values: every argument is then
    checked against the type's settings; otherwise `{{secrets/…}}` arguments are left unchecked.
    """
    translator = TRANSLATORS.get(provider)
    if translator is None:
        supported = ", ".join(sorted(TRANSLATORS))
        raise DialectError(f"unsupported provider {provider!r} (supported: {supported})")
    if not isinstance(config, Mapping):
        raise DialectError(f"{provider} provider: the config must be a mapping")
    return translator(provider, config, resolved)
