"""MLflow AI Gateway and Databricks external-model configs: translation, expansion and their errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelyard.config import (
    ConfigError,
    LimitEntry,
    ModelEntry,
    RouteEntry,
    expand,
    load_config,
    parse_config,
)
from modelyard.dialects import DialectError, Translated, translate
from modelyard.dialects.external import TRANSLATORS, is_secret_reference
from modelyard.providers.registry import PROVIDER_TYPES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "mlflow"
SECRET = "sk-test-" + "z9" * 12
"""A credential that must never appear in any error text."""
ACCESS_KEY_ID = "AKIAEXAMPLEKEYID0000"
ENV = {"OPENAI_API_KEY": SECRET}

# ---- the MLflow seed page's examples, loaded verbatim -------------------------------------------


def _openai_endpoint(
    name: str, model: str, task: str = "chat", data: dict[str, Any] | None = None, **defaults: Any
) -> tuple[tuple[str, str, dict[str, Any]], ModelEntry]:
    provider = f"endpoint:{name}"
    model_entry = ModelEntry(provider=provider, id=model, alias=name, tasks=(task,), defaults=defaults)  # type: ignore[arg-type]
    return (provider, "openai", data or {"apikey": SECRET}), model_entry


def _expected(*endpoints: tuple[tuple[str, str, dict[str, Any]], ModelEntry]) -> dict[str, Any]:
    return {"providers": [e[0] for e in endpoints], "models": [e[1] for e in endpoints]}


FIXTURE_CASES = {
    "provider_openai.yaml": {
        **_expected(
            _openai_endpoint(
                "gpt4-chat",
                "gpt-4",
                data={
                    "apikey": SECRET,
                    "base_url": "https://api.openai.com/v1",
                    "organization": "your_org_id",
                },
            )
        ),
        "routes": [],
        "limits": [],
    },
    "rate_limit.yaml": {
        **_expected(_openai_endpoint("rate-limited-chat", "gpt-3.5-turbo")),
        "routes": [],
        "limits": [LimitEntry("rate-limited-chat", 100, 60)],
    },
    "model_parameters.yaml": {
        **_expected(
            _openai_endpoint("configured-chat", "gpt-3.5-turbo", temperature=0.7, max_tokens=1000, top_p=0.9)
        ),
        "routes": [],
        "limits": [],
    },
    "multiple_endpoints.yaml": {
        **_expected(
            _openai_endpoint("fast-chat", "gpt-3.5-turbo"),
            _openai_endpoint("quality-chat", "gpt-4"),
            _openai_endpoint("embeddings", "text-embedding-ada-002", task="embeddings"),
        ),
        "routes": [],
        "limits": [],
    },
    "traffic_routing.yaml": {
        **_expected(_openai_endpoint("chat1", "gpt-5"), _openai_endpoint("chat2", "gpt-4.1")),
        "routes": [RouteEntry("chat-route", "chat", (("chat1", 80), ("chat2", 20)))],
        "limits": [],
    },
    "secure.yaml": {
        **_expected(_openai_endpoint("production-chat", "gpt-4")),
        "routes": [],
        "limits": [LimitEntry("production-chat", 1000, 60)],
    },
}


def test_every_fixture_has_a_case() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(FIXTURE_CASES)


@pytest.mark.parametrize(("name", "expected"), FIXTURE_CASES.items(), ids=list(FIXTURE_CASES))
def test_mlflow_seed_examples_load_and_expand(name: str, expected: dict[str, Any]) -> None:
    expanded = expand(load_config(FIXTURES / name, env=ENV))
    assert [(p.name, p.type, p.data) for p in expanded.providers] == expected["providers"]
    assert list(expanded.models) == expected["models"]
    assert list(expanded.routes) == expected["routes"]
    assert list(expanded.limits) == expected["limits"]
    for provider in expanded.providers:
        PROVIDER_TYPES[provider.type].settings.model_validate(provider.data)


def test_the_route_example_splits_80_20() -> None:
    config = load_config(FIXTURES / "traffic_routing.yaml", env=ENV)
    (route,) = config.routes
    assert (route.routing_strategy, route.task) == ("TRAFFIC_SPLIT", "chat")
    assert [(d.name, d.traffic_percentage) for d in route.destinations] == [("chat1", 80), ("chat2", 20)]


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_seed_examples_need_their_env_var(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(FIXTURES / name, env={})
    text = str(caught.value)
    assert text.startswith(f"{FIXTURES / name}: endpoints[0].model.config.openai_api_key: ")
    assert "environment variable OPENAI_API_KEY is not set" in text


# ---- translate(): every supported provider, in MLflow's and Databricks' spellings ---------------

AZURE_BASE = "https://my-azure-openai-endpoint.openai.azure.com"
TRANSLATIONS = [
    pytest.param(
        "openai",
        {
            "openai_api_key": SECRET,
            "openai_api_base": "https://api.openai.com/v1",
            "openai_organization": "o",
        },
        Translated(
            "openai", {"apikey": SECRET, "base_url": "https://api.openai.com/v1", "organization": "o"}, {}
        ),
        id="openai-mlflow",
    ),
    pytest.param(
        "openai",
        {"openai_api_key_plaintext": SECRET, "openai_api_type": "openai", "openai_api_version": "2024-02-01"},
        Translated("openai", {"apikey": SECRET}, {}),
        id="openai-databricks-plaintext",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "temperature": 0.2, "stop": ["\n"], "seed": 7, "max_completion_tokens": 9},
        Translated(
            "openai",
            {"apikey": SECRET},
            {"temperature": 0.2, "stop": ["\n"], "seed": 7, "max_completion_tokens": 9},
        ),
        id="openai-defaults",
    ),
    pytest.param(
        "openai",
        {  # the seed's Databricks Azure OpenAI example
            "openai_api_type": "azure",
            "openai_api_key": "{{secrets/my_openai_secret_scope/openai_api_key}}",
            "openai_api_base": AZURE_BASE,
            "openai_deployment_name": "my-gpt-35-turbo-deployment",
            "openai_api_version": "2023-05-15",
        },
        Translated(
            "azure-openai",
            {
                "apikey": "{{secrets/my_openai_secret_scope/openai_api_key}}",
                "base_url": AZURE_BASE,
                "api_version": "2023-05-15",
                "resource_name": "my-azure-openai-endpoint",
            },
            {},
            model_id="my-gpt-35-turbo-deployment",
        ),
        id="azure-databricks-seed",
    ),
    pytest.param(
        "openai",
        {
            "openai_api_type": "AZURE",
            "openai_api_key": SECRET,
            "openai_api_base": "https://res1.openai.azure.com/",
            "openai_deployment_name": "dep",
            "openai_api_version": "2024-10-21",
            "openai_organization": "ignored-on-azure",
            "max_tokens": 50,
        },
        Translated(
            "azure-openai",
            {
                "apikey": SECRET,
                "base_url": "https://res1.openai.azure.com/",
                "api_version": "2024-10-21",
                "resource_name": "res1",
            },
            {"max_tokens": 50},
            model_id="dep",
        ),
        id="azure-mlflow",
    ),
    pytest.param(
        "openai",
        {
            "openai_api_type": "azuread",
            "microsoft_entra_tenant_id": "tenant-1",
            "microsoft_entra_client_id": "client-1",
            "microsoft_entra_client_secret_plaintext": SECRET,
            "openai_api_base": AZURE_BASE,
            "openai_deployment_name": "dep",
            "openai_api_version": "2024-10-21",
        },
        Translated(
            "azure-openai",
            {
                "entra_tenant_id": "tenant-1",
                "entra_client_id": "client-1",
                "entra_client_secret": SECRET,
                "base_url": AZURE_BASE,
                "api_version": "2024-10-21",
                "resource_name": "my-azure-openai-endpoint",
            },
            {},
            model_id="dep",
        ),
        id="azuread-entra",
    ),
    pytest.param(
        "anthropic",
        {"anthropic_api_key": "{{secrets/my_anthropic_secret_scope/anthropic_api_key}}"},
        Translated("anthropic", {"apikey": "{{secrets/my_anthropic_secret_scope/anthropic_api_key}}"}, {}),
        id="anthropic-databricks-seed",
    ),
    pytest.param(
        "anthropic",
        {"anthropic_api_key": SECRET, "anthropic_version": "2023-06-01", "max_tokens": 1024, "top_k": 5},
        Translated(
            "anthropic",
            {"apikey": SECRET, "anthropic_version": "2023-06-01"},
            {"max_tokens": 1024, "top_k": 5},
        ),
        id="anthropic-mlflow",
    ),
    pytest.param(
        "cohere",
        {"cohere_api_key_plaintext": SECRET, "cohere_api_base": "https://api.cohere.com"},
        Translated("cohere", {"apikey": SECRET, "base_url": "https://api.cohere.com"}, {}),
        id="cohere-databricks",
    ),
    pytest.param(
        "cohere", {"cohere_api_key": SECRET}, Translated("cohere", {"apikey": SECRET}, {}), id="cohere-mlflow"
    ),
    pytest.param(
        "amazon-bedrock",
        {  # the seed's Databricks Bedrock example (its "<YOUR_AWS_REGION>" placeholder filled in)
            "aws_region": "us-east-1",
            "aws_access_key_id": "{{secrets/my_amazon_bedrock_secret_scope/aws_access_key_id}}",
            "aws_secret_access_key": "{{secrets/my_amazon_bedrock_secret_scope/aws_secret_access_key}}",
            "bedrock_provider": "anthropic",
        },
        Translated(
            "bedrock",
            {
                "region": "us-east-1",
                "access_key_id": "{{secrets/my_amazon_bedrock_secret_scope/aws_access_key_id}}",
                "secret_access_key": "{{secrets/my_amazon_bedrock_secret_scope/aws_secret_access_key}}",
            },
            {},
            model_prefix="anthropic.",
        ),
        id="bedrock-databricks-seed",
    ),
    pytest.param(
        "amazon-bedrock",
        {
            "aws_region": "eu-west-3",
            "aws_access_key_id_plaintext": ACCESS_KEY_ID,
            "aws_secret_access_key_plaintext": SECRET,
            "bedrock_provider": "AI21Labs",
        },
        Translated(
            "bedrock",
            {"region": "eu-west-3", "access_key_id": ACCESS_KEY_ID, "secret_access_key": SECRET},
            {},
            model_prefix="ai21.",
        ),
        id="bedrock-databricks-plaintext",
    ),
    pytest.param(
        "bedrock",
        {
            "aws_config": {
                "aws_region": "us-west-2",
                "aws_access_key_id": ACCESS_KEY_ID,
                "aws_secret_access_key": SECRET,
                "aws_session_token": "token-1",
            },
            "temperature": 0.5,
        },
        Translated(
            "bedrock",
            {
                "region": "us-west-2",
                "access_key_id": ACCESS_KEY_ID,
                "secret_access_key": SECRET,
                "session_token": "token-1",
            },
            {"temperature": 0.5},
        ),
        id="bedrock-mlflow-aws-config",
    ),
    pytest.param(
        "ai21labs",
        {"ai21labs_api_key": SECRET},
        Translated("ai21labs", {"apikey": SECRET}, {}),
        id="ai21labs",
    ),
    pytest.param(
        "ai21labs",
        {"ai21labs_api_key_plaintext": SECRET},
        Translated("ai21labs", {"apikey": SECRET}, {}),
        id="ai21labs-plaintext",
    ),
    pytest.param(
        "google-cloud-vertex-ai",
        {"private_key_plaintext": SECRET, "region": "us-central1", "project_id": "my-project-123"},
        Translated(
            "google-cloud-vertex-ai",
            {"private_key": SECRET, "region": "us-central1", "project_id": "my-project-123"},
            {},
        ),
        id="vertex-databricks",
    ),
    pytest.param(
        "databricks-model-serving",
        {"databricks_workspace_url": "https://example.cloud.databricks.com", "databricks_api_token": SECRET},
        Translated(
            "databricks-model-serving", {"host": "https://example.cloud.databricks.com", "token": SECRET}, {}
        ),
        id="databricks-model-serving",
    ),
    pytest.param(
        "gemini", {"gemini_api_key": SECRET}, Translated("gemini", {"apikey": SECRET}, {}), id="gemini-mlflow"
    ),
]


@pytest.mark.parametrize(("provider", "config", "expected"), TRANSLATIONS)
def test_translate(provider: str, config: dict[str, Any], expected: Translated) -> None:
    translated = translate(provider, config)
    assert translated == expected
    if not any(is_secret_reference(value) for value in translated.data.values()):
        PROVIDER_TYPES[translated.type_name].settings.model_validate(translated.data)


def test_every_supported_provider_has_a_translation_case() -> None:
    covered = {param.values[0] for param in TRANSLATIONS}
    assert covered == set(TRANSLATORS)


@pytest.mark.parametrize(
    ("translated", "name", "upstream"),
    [
        (Translated("openai", {}, {}), "gpt-4", "gpt-4"),
        (Translated("azure-openai", {}, {}, model_id="my-deployment"), "gpt-35-turbo", "my-deployment"),
        (Translated("bedrock", {}, {}, model_prefix="anthropic."), "claude-v2", "anthropic.claude-v2"),
        (
            Translated("bedrock", {}, {}, model_prefix="anthropic."),
            "anthropic.claude-v2:1",
            "anthropic.claude-v2:1",
        ),
    ],
)
def test_upstream_model(translated: Translated, name: str, upstream: str) -> None:
    assert translated.upstream_model(name) == upstream


TRANSLATE_ERRORS = [
    pytest.param(
        "anthropic",
        {"anthropic_api_key": SECRET, "anthropic_api_key_plaintext": SECRET},
        "anthropic provider: give exactly one of anthropic_api_key or anthropic_api_key_plaintext, not both",
        id="reference-and-plaintext",
    ),
    pytest.param(
        "anthropic",
        {"anthropic_version": SECRET},
        "anthropic provider: anthropic_api_key or anthropic_api_key_plaintext is required",
        id="neither-reference-nor-plaintext",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "bogus": SECRET},
        "openai provider: unknown key 'bogus' (known: ",
        id="unknown-key",
    ),
    pytest.param(
        "mistral",
        {"mistral_api_key": SECRET},
        "unsupported provider 'mistral' (supported: ai21labs, amazon-bedrock, anthropic, bedrock, cohere, "
        "databricks-model-serving, gemini, google-cloud-vertex-ai, openai)",
        id="unsupported-provider",
    ),
    pytest.param("mosaicml", {"mosaicml_api_key": SECRET}, "unsupported provider 'mosaicml'", id="mosaicml"),
    pytest.param("palm", {"palm_api_key": SECRET}, "unsupported provider 'palm'", id="palm"),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "openai_api_type": SECRET},
        "openai provider: openai_api_type must be one of openai, azure, azuread",
        id="bad-api-type",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "openai_deployment_name": SECRET},
        "openai provider: openai_deployment_name: applies only to openai_api_type azure or azuread",
        id="deployment-without-azure",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "microsoft_entra_client_secret": SECRET},
        "openai provider: microsoft_entra_client_secret: applies only to openai_api_type azuread",
        id="entra-without-azuread",
    ),
    pytest.param(
        "openai",
        {"openai_api_type": "azure", "openai_api_key": SECRET, "openai_api_base": AZURE_BASE},
        "openai provider: openai_deployment_name is required",
        id="azure-without-deployment",
    ),
    pytest.param(
        "openai",
        {
            "openai_api_type": "azuread",
            "openai_api_key": SECRET,
            "openai_api_base": AZURE_BASE,
            "openai_deployment_name": "d",
            "openai_api_version": "v",
        },
        "openai_api_key: with openai_api_type azuread Modelyard authenticates with microsoft_entra_tenant_id",
        id="azuread-static-token",
    ),
    pytest.param(
        "openai",
        {
            "openai_api_type": "azure",
            "openai_api_key": SECRET,
            "openai_api_base": SECRET,
            "openai_deployment_name": "d",
            "openai_api_version": "2024-10-21",
        },
        "openai provider: openai_api_base: String should match pattern",
        id="azure-base-not-a-url",
    ),
    pytest.param(
        "bedrock",
        {"aws_config": {"aws_role_arn": SECRET, "aws_region": "us-east-1"}},
        "bedrock provider: aws_config.aws_role_arn: assuming an IAM role is not supported",
        id="bedrock-role",
    ),
    pytest.param(
        "bedrock",
        {"aws_config": {"aws_region": "us-east-1", "bogus": SECRET}},
        "bedrock provider: unknown key 'aws_config.bogus'",
        id="bedrock-nested-unknown",
    ),
    pytest.param(
        "bedrock", {"aws_config": SECRET}, "bedrock provider: aws_config must be a mapping", id="aws-config"
    ),
    pytest.param(
        "bedrock",
        {"aws_region": "us-east-1", "aws_config": {"aws_region": "us-east-1"}},
        "bedrock provider: aws_region is given both in aws_config and beside it",
        id="bedrock-nested-and-flat",
    ),
    pytest.param(
        "amazon-bedrock",
        {
            "aws_region": "us-east-1",
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET,
            "bedrock_provider": SECRET,
        },
        "amazon-bedrock provider: bedrock_provider must be one of anthropic, cohere, ai21labs, amazon",
        id="bedrock-provider",
    ),
    pytest.param(
        "amazon-bedrock",
        {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET},
        "amazon-bedrock provider: aws_region is required",
        id="bedrock-without-region",
    ),
    pytest.param(
        "amazon-bedrock",
        {"aws_region": "us-east-1", "aws_access_key_id": SECRET, "aws_secret_access_key": SECRET},
        "amazon-bedrock provider: aws_access_key_id: String should match pattern",
        id="bedrock-malformed-key-id",
    ),
    pytest.param(
        "google-cloud-vertex-ai",
        {"private_key": SECRET, "region": "us-central1"},
        "google-cloud-vertex-ai provider: project_id is required",
        id="vertex-without-project",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "temperature": SECRET},
        "openai provider: temperature: default parameter 'temperature' has the wrong type",
        id="default-of-wrong-type",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "max_tokens": True},
        "default parameter 'max_tokens' has the wrong type",
        id="default-bool",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": SECRET, "stop": [SECRET, 1]},
        "default parameter 'stop' must be a string or a list of strings",
        id="default-stop-list",
    ),
    pytest.param(
        "openai",
        {"openai_api_key": 1234},
        "openai provider: openai_api_key: Input should be a valid string",
        id="credential-not-a-string",
    ),
]


@pytest.mark.parametrize(("provider", "config", "message"), TRANSLATE_ERRORS)
def test_translate_errors_name_provider_and_key_never_a_value(
    provider: str, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(DialectError) as caught:
        translate(provider, config)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_unresolved_references_are_checked_once_resolved() -> None:
    config = {
        "aws_region": "us-east-1",
        "aws_access_key_id": "{{secrets/scope/aws_access_key_id}}",
        "aws_secret_access_key": "{{secrets/scope/aws_secret_access_key}}",
    }
    assert translate("amazon-bedrock", config).data["access_key_id"] == "{{secrets/scope/aws_access_key_id}}"
    with pytest.raises(DialectError, match="aws_access_key_id: String should match pattern"):
        translate("amazon-bedrock", config, resolved=True)


# ---- the config file: endpoints and routes beside providers and models --------------------------


def _endpoint(name: str, task: str = "llm/v1/chat", **config: Any) -> dict[str, Any]:
    model = {
        "provider": "openai",
        "name": "gpt-4o",
        "config": {"openai_api_key": "$OPENAI_API_KEY", **config},
    }
    return {"name": name, "endpoint_type": task, "model": model}


def _route(name: str, *destinations: tuple[str, int], task: str = "llm/v1/chat") -> dict[str, Any]:
    return {
        "name": name,
        "task_type": task,
        "destinations": [{"name": n, "traffic_percentage": p} for n, p in destinations],
    }


NATIVE: dict[str, Any] = {
    "providers": [{"name": "d", "type": "demo"}],
    "models": [
        {"provider": "d", "id": "demo-chat", "alias": "local"},
        {"provider": "d", "id": "demo-chat-2", "alias": "local"},
        {"provider": "d", "id": "demo-embed", "alias": "local-embed", "tasks": ["embeddings"]},
    ],
}


def test_native_models_endpoints_and_routes_live_in_one_file() -> None:
    document = {
        **NATIVE,
        "endpoints": [
            _endpoint("cloud", temperature=0.3),
            _endpoint("cloud-embed", "llm/v1/embeddings"),
            {
                "name": "claude",
                "endpoint_type": "llm/v1/chat",
                "model": {
                    "provider": "amazon-bedrock",
                    "name": "claude-3-haiku-20240307-v1:0",
                    "config": {
                        "aws_config": {
                            "aws_region": "$AWS_REGION",
                            "aws_access_key_id": "${AWS_ACCESS_KEY_ID}",
                            "aws_secret_access_key": "$AWS_SECRET_ACCESS_KEY",
                        },
                        "bedrock_provider": "Anthropic",
                    },
                },
            },
        ],
        "routes": [_route("chat", ("local", 50), ("cloud", 30), ("claude", 20))],
        "routing": {
            "policies": {"cloud": {"fallbacks": ["local", "chat"]}, "chat": {"fallbacks": ["claude"]}}
        },
    }
    env = {
        **ENV,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    expanded = expand(parse_config(document, env))
    assert [(p.name, p.type) for p in expanded.providers] == [
        ("d", "demo"),
        ("endpoint:cloud", "openai"),
        ("endpoint:cloud-embed", "openai"),
        ("endpoint:claude", "bedrock"),
    ]
    assert expanded.providers[3].data == {
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET,
    }
    assert [(m.name, m.provider, m.id, m.tasks, m.defaults) for m in expanded.models[3:]] == [
        ("cloud", "endpoint:cloud", "gpt-4o", ("chat",), {"temperature": 0.3}),
        ("cloud-embed", "endpoint:cloud-embed", "gpt-4o", ("embeddings",), {}),
        ("claude", "endpoint:claude", "anthropic.claude-3-haiku-20240307-v1:0", ("chat",), {}),
    ]
    assert expanded.models[:3] == tuple(parse_config(NATIVE).models)
    assert expanded.routes == (RouteEntry("chat", "chat", (("local", 50), ("cloud", 30), ("claude", 20))),)


def _config_error(document: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, ENV if env is None else env)
    text = str(caught.value)
    assert SECRET not in text
    return text


CONFIG_ERRORS = [
    pytest.param(
        {"endpoints": [_endpoint("a"), _endpoint("b")], "routes": [_route("r", ("a", 80), ("b", 30))]},
        "route 'r': traffic percentages sum to 110, not 100",
        id="percentages-over-100",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("r", ("a", 99))]},
        "route 'r': traffic percentages sum to 99, not 100",
        id="percentages-under-100",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("r", ("a", 50), ("a", 50))]},
        "route 'r': destinations[1] repeats 'a' (destinations[0])",
        id="repeated-destination",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("r", ("a", 80), ("chat3", 20))]},
        "routes[0].destinations[1].name: no endpoint or alias named 'chat3'",
        id="unknown-destination",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("r1", ("a", 100)), _route("r2", ("r1", 100))]},
        "routes[1].destinations[0].name: 'r1' is a route; a route's destinations are endpoints or aliases",
        id="route-to-route",
    ),
    pytest.param(
        {"endpoints": [_endpoint("e", "llm/v1/embeddings")], "routes": [_route("r", ("e", 100))]},
        "routes[0].destinations[0].name: 'e' does not serve llm/v1/chat, the task of route 'r'",
        id="endpoint-of-another-task",
    ),
    pytest.param(
        {**NATIVE, "routes": [_route("r", ("local-embed", 100))]},
        "'local-embed' does not serve llm/v1/chat",
        id="alias-of-another-task",
    ),
    pytest.param(
        {
            "providers": [{"name": "an", "type": "anthropic", "data": {"apikey": SECRET}}],
            "models": [{"provider": "an", "id": "claude-sonnet-4-5", "alias": "claude"}],
            "routes": [_route("r", ("claude", 100), task="llm/v1/embeddings")],
        },
        "routes[0].destinations[0].name: 'claude' does not serve llm/v1/embeddings",
        id="alias-whose-provider-lacks-the-task",
    ),
    pytest.param(
        {**NATIVE, "endpoints": [_endpoint("local")]},
        "endpoints[0].name: 'local' is already a model alias",
        id="endpoint-named-like-an-alias",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a"), _endpoint("a")]},
        "endpoints[1].name: 'a' is already the name of endpoints[0]",
        id="two-endpoints-one-name",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("a", ("a", 100))]},
        "routes[0].name: 'a' is already the name of endpoints[0]",
        id="route-named-like-an-endpoint",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routes": [_route("r", ("a", 100)), _route("r", ("a", 100))]},
        "routes[1].name: 'r' is already the name of routes[0]",
        id="two-routes-one-name",
    ),
    pytest.param(
        {"providers": [{"name": "endpoint:a", "type": "demo"}], "endpoints": [_endpoint("a")]},
        "endpoints[0].name: its provider 'endpoint:a' is already the name of providers[0]",
        id="generated-provider-name-taken",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a")], "routing": {"policies": {"a": {"fallbacks": ["ghost"]}}}},
        "routing.policies.a.fallbacks: no alias, endpoint or route named 'ghost'",
        id="unknown-fallback",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a", bogus=1)]},
        "endpoints[0].model.config: Value error, openai provider: unknown key 'bogus'",
        id="unknown-config-key",
    ),
    pytest.param(
        {"endpoints": [{**_endpoint("a"), "model": {"provider": "mistral", "name": "m", "config": {}}}]},
        "endpoints[0].model.config: Value error, unsupported provider 'mistral'",
        id="unsupported-provider",
    ),
    pytest.param(
        {
            "endpoints": [
                {
                    "name": "a",
                    "endpoint_type": "llm/v1/embeddings",
                    "model": {
                        "provider": "anthropic",
                        "name": "claude",
                        "config": {"anthropic_api_key": SECRET},
                    },
                }
            ]
        },
        "endpoint 'a': the anthropic provider does not serve llm/v1/embeddings",
        id="provider-lacks-the-task",
    ),
    pytest.param(
        {"endpoints": [{**_endpoint("a"), "limit": {"renewal_period": "week", "calls": 5}}]},
        "endpoints[0].limit.renewal_period",
        id="limit-period",
    ),
    pytest.param(
        {"endpoints": [{**_endpoint("a"), "limit": {"renewal_period": "minute", "calls": 0}}]},
        "endpoints[0].limit.calls",
        id="limit-calls",
    ),
    pytest.param(
        {"endpoints": [{**_endpoint("a"), "route_type": "llm/v1/chat"}]},
        "endpoints[0].route_type",
        id="unknown-endpoint-key",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a", "llm/v2/chat")]},
        "endpoints[0].endpoint_type",
        id="unknown-endpoint-type",
    ),
    pytest.param(
        {
            "endpoints": [_endpoint("a")],
            "routes": [{**_route("r", ("a", 100)), "routing_strategy": "ROUND_ROBIN"}],
        },
        "routes[0].routing_strategy",
        id="routing-strategy",
    ),
    pytest.param(
        {"endpoints": [_endpoint("a", temperature="hot")]},
        "default parameter 'temperature' has the wrong type",
        id="default-of-wrong-type",
    ),
]


@pytest.mark.parametrize(("document", "message"), CONFIG_ERRORS)
def test_config_errors_name_path_and_problem(document: dict[str, Any], message: str) -> None:
    assert message in _config_error(document)


@pytest.mark.parametrize(
    ("config", "path", "variable"),
    [
        ({"openai_api_key": "$OPENAI_KEY_X"}, "endpoints[0].model.config.openai_api_key", "OPENAI_KEY_X"),
        (
            {"aws_config": {"aws_region": "us-east-1", "aws_secret_access_key": "${AWS_SECRET}"}},
            "endpoints[0].model.config.aws_config.aws_secret_access_key",
            "AWS_SECRET",
        ),
    ],
)
def test_missing_env_var_in_endpoint_config(config: dict[str, Any], path: str, variable: str) -> None:
    document = {
        "endpoints": [
            {
                "name": "a",
                "endpoint_type": "llm/v1/chat",
                "model": {"provider": "bedrock", "name": "m", "config": config},
            }
        ]
    }
    assert f"{path}: environment variable {variable} is not set" in _config_error(document)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [_endpoint("a", bogus=1)]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=ENV)
    assert str(caught.value).startswith(f"{path}: invalid configuration:\n  endpoints[0].model.config: ")


# ---- docs/dialects.md ---------------------------------------------------------------------------

DOC = (ROOT / "docs" / "dialects.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("example", re.findall(r"```yaml\n(.*?)```", DOC, re.DOTALL))
def test_doc_examples_load(example: str) -> None:
    env = {name: "example-value-1234" for name in re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", example)}
    env["AWS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
    assert expand(parse_config(yaml.safe_load(example), env)).models


def test_doc_lists_every_supported_provider() -> None:
    for provider in TRANSLATORS:
        assert f"`{provider}`" in DOC
