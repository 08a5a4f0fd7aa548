"""The `routing:` section and routes: resolution of policies and the errors a config author sees."""

from __future__ import annotations

from typing import Any

import pytest
from modelyard.config import ConfigError, expand, parse_config
from modelyard.routing.policy import Backoff, Timeouts

BASE: dict[str, Any] = {
    "providers": [{"name": "d", "type": "demo"}],
    "models": [
        {"provider": "d", "id": "demo-chat", "alias": "a"},
        {"provider": "d", "id": "demo-chat-2", "alias": "b"},
    ],
}


def _config(**extra: Any) -> Any:
    return parse_config({**BASE, **extra})


def test_a_policy_overrides_only_what_it_names() -> None:
    config = _config(
        routing={
            "defaults": {
                "strategy": "least_in_flight",
                "timeouts": {"connect": 2, "total": 30},
                "max_attempts": 5,
            },
            "policies": {"a": {"fallbacks": ["b"], "timeouts": {"first_token": 3}, "backoff": {"max": 1}}},
        }
    )
    policy = config.routing.resolve("a")
    assert policy.strategy == "least_in_flight"
    assert policy.fallbacks == ("b",)
    assert policy.max_attempts == 5
    assert policy.timeouts == Timeouts(connect=2, first_token=3, total=30)
    assert policy.backoff == Backoff(initial=0.1, max=1, multiplier=2.0)
    other = config.routing.resolve("b")
    assert other.fallbacks == () and other.timeouts == Timeouts(connect=2, first_token=120, total=30)
    assert other.fallback_on == {"429", "5xx", "timeout", "connection"}


def test_routes_expand_to_percentages_per_destination() -> None:
    route = {
        "name": "r",
        "task_type": "llm/v1/chat",
        "destinations": [{"name": "a", "traffic_percentage": 70}, {"name": "b", "traffic_percentage": 30}],
        "routing_strategy": "TRAFFIC_SPLIT",
    }
    (entry,) = expand(_config(routes=[route])).routes
    assert (entry.name, entry.task, entry.destinations) == ("r", "chat", (("a", 70), ("b", 30)))


def _route(**changes: Any) -> dict[str, Any]:
    route = {
        "name": "r",
        "task_type": "llm/v1/chat",
        "destinations": [{"name": "a", "traffic_percentage": 50}, {"name": "b", "traffic_percentage": 50}],
    }
    return {**route, **changes}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {
                "routes": [
                    _route(
                        destinations=[
                            {"name": "a", "traffic_percentage": 60},
                            {"name": "b", "traffic_percentage": 30},
                        ]
                    )
                ]
            },
            "traffic percentages sum to 90, not 100",
        ),
        (
            {"routes": [_route(destinations=[{"name": "zz", "traffic_percentage": 100}])]},
            "no endpoint or alias named 'zz'",
        ),
        ({"routes": [_route(name="a")]}, "'a' is already a model alias"),
        ({"routes": [_route(routing_strategy="ROUND_ROBIN")]}, "routing_strategy"),
        ({"routing": {"policies": {"ghost": {}}}}, "routing.policies.ghost: no alias, endpoint or route"),
        (
            {"routing": {"policies": {"a": {"fallbacks": ["ghost"]}}}},
            "no alias, endpoint or route named 'ghost'",
        ),
        ({"routing": {"defaults": {"strategy": "fastest"}}}, "routing.defaults.strategy"),
        ({"routing": {"defaults": {"fallback_on": ["400"]}}}, "routing.defaults.fallback_on"),
        ({"routing": {"defaults": {"timeouts": {"connect": 0}}}}, "routing.defaults.timeouts.connect"),
        (
            {"routing": {"breaker": {"cooldown": 10, "max_cooldown": 5}}},
            "max_cooldown must be at least cooldown",
        ),
        ({"routing": {"surprise": 1}}, "routing.surprise"),
    ],
)
def test_config_errors_name_the_path_and_the_problem(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(**extra)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("defaults", "ok"),
    [
        ({"temperature": 0.7, "max_tokens": 1000, "top_p": 0.9}, True),
        ({"stop": ["\\n"], "seed": 3, "top_k": 5}, True),
        ({"temperature": "hot"}, False),
        ({"max_tokens": True}, False),
        ({"logit_bias": {}}, False),
    ],
)
def test_model_defaults_are_checked(defaults: dict[str, Any], ok: bool) -> None:
    models = [{"provider": "d", "id": "demo-chat", "alias": "a", "defaults": defaults}]
    if ok:
        assert parse_config({**BASE, "models": models}).models[0].defaults == defaults
    else:
        with pytest.raises(ConfigError, match=r"models\[0\]\.defaults"):
            parse_config({**BASE, "models": models})
