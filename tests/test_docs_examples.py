"""Every configuration example in docs/providers.md is a valid config for its provider type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from modelyard.config import parse_config

DOC = (Path(__file__).resolve().parents[1] / "docs" / "providers.md").read_text()
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC, re.DOTALL)
ENV = {name: "example-value-1234" for name in re.findall(r"\$([A-Z_][A-Z0-9_]*)", DOC)}
ENV["AWS_ACCESS_KEY_ID"] = "ASIAEXAMPLEKEYID0000"  # access key ids have a fixed format


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_example_is_valid(example: str) -> None:
    config = parse_config(yaml.safe_load(example), env=ENV)
    assert config.providers and config.models


def test_every_served_type_has_an_example() -> None:
    documented = {
        p.type for example in EXAMPLES for p in parse_config(yaml.safe_load(example), env=ENV).providers
    }
    assert {
        "openai",
        "anthropic",
        "azure-openai",
        "cohere",
        "watsonxai",
        "databricks-model-serving",
        "ai21labs",
        "demo",
        "bedrock",
        "gemini",
        "google-cloud-vertex-ai",
    } <= documented
