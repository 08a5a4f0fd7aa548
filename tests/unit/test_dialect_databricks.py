"""Databricks serving-endpoint configs: what parses, and how each mistake is named."""

from __future__ import annotations

from typing import Any

import pytest
from modelyard.dialects.databricks import config_key, parse_endpoint_config
from modelyard.dialects.external import DialectError
from modelyard.secrets.references import parse_reference


def _entity(name: str, provider: str = "openai", **config: Any) -> dict[str, Any]:
    settings = config or {"openai_api_key": "{{secrets/s/k}}"}
    return {
        "name": name,
        "external_model": {
            "name": "m",
            "provider": provider,
            "task": "llm/v1/chat",
            config_key(provider): settings,
        },
    }


def test_the_seed_shape_parses_with_its_split() -> None:
    spec = parse_endpoint_config(
        {
            "served_entities": [
                _entity("a"),
                _entity(
                    "b",
                    "amazon-bedrock",
                    aws_region="us-east-1",
                    aws_access_key_id_plaintext="AKIAIOSFODNN7EXAMPLE",
                    aws_secret_access_key="{{secrets/s/aws}}",
                    bedrock_provider="anthropic",
                ),
            ],
            "traffic_config": {
                "routes": [
                    {"served_model_name": "a", "traffic_percentage": 80},
                    {"served_model_name": "b", "traffic_percentage": 20},
                ]
            },
        }
    )
    assert [(e.name, e.translated.type_name, e.upstream_model) for e in spec.entities] == [
        ("a", "openai", "m"),
        ("b", "bedrock", "anthropic.m"),
    ]
    assert spec.routes == (("a", 80), ("b", 20))


def test_one_entity_needs_no_traffic_config() -> None:
    assert parse_endpoint_config({"served_entities": [_entity("only")]}).routes == (("only", 100),)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({}, "give 1 to 15 served entities"),
        ({"served_entities": [_entity("a")], "extra": 1}, "unknown key 'extra'"),
        ({"served_entities": [_entity("a"), _entity("a")]}, "entity names must be unique"),
        ({"served_entities": [_entity("a b")]}, "served_entities[0].name"),
        ({"served_entities": [{"name": "a", "entity_name": "x"}]}, "served models of this workspace"),
        ({"served_entities": [_entity("a", "palm")]}, "unsupported provider 'palm'"),
        (
            {
                "served_entities": [
                    {
                        "name": "a",
                        "external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat"},
                    }
                ]
            },
            "openai_config: required",
        ),
        (
            {"served_entities": [_entity("a", openai_api_key="x", openai_api_key_plaintext="y")]},
            "exactly one",
        ),
        ({"served_entities": [_entity("a"), _entity("b")]}, "required with more than one"),
        (
            {
                "served_entities": [_entity("a"), _entity("b")],
                "traffic_config": {
                    "routes": [
                        {"served_model_name": "a", "traffic_percentage": 100},
                        {"served_model_name": "a", "traffic_percentage": 0},
                    ]
                },
            },
            "each served entity at most once",
        ),
        (
            {
                "served_entities": [_entity("a")],
                "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 99}]},
            },
            "sum to 99, not 100",
        ),
    ],
)
def test_mistakes_are_named(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(DialectError) as error:
        parse_endpoint_config(config)
    assert problem in str(error.value)


def test_scope_references_parse_and_malformed_ones_are_refused_without_echo() -> None:
    ref = parse_reference("{{secrets/team.a/openai_key-1}}")
    assert (ref.scheme, ref.target, ref.path) == ("scope", "team.a", "openai_key-1")
    for bad in ("{{secrets/team}}", "{{secrets/a/b/c}}", "{{secrets/a b/c}}", "{{secrets/a/b"):
        with pytest.raises(Exception) as error:
            parse_reference(bad)
        assert bad not in str(error.value)
