"""The YAML config: valid files load, every mistake is a ConfigError naming the file and key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelyard.config import ConfigError, load_config, parse_config
from modelyard.providers.registry import PROVIDER_TYPES

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SECRET = "sk-test-" + "q7" * 12
"""A credential that must never appear in any error text."""
_ENDPOINT: dict[str, Any] = {
    "name": "chat",
    "endpoint_type": "llm/v1/chat",
    "model": {"provider": "openai", "name": "gpt-4o", "config": {"openai_api_key": "$OPENAI_API_KEY"}},
}
"""An MLflow AI Gateway endpoint."""


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _openai(data: dict[str, Any], name: str = "oa", type_name: str = "openai") -> dict[str, Any]:
    return {"providers": [{"name": name, "type": type_name, "data": data}]}


def test_valid_file_loads_every_section(tmp_path: Path) -> None:
    document = {
        "listen": {"http": "0.0.0.0:9090", "grpc": "[::1]:6000"},
        "workers": 3,
        "data_dir": "/var/lib/modelyard",
        "max_request_mb": 8,
        "providers": [
            {"name": "demo", "type": "demo", "data": {"word_delay_ms": 5}},
            {"name": "oa", "type": "openai", "data": {"apikey": "$OPENAI_KEY", "organization": "org-1"}},
        ],
        "models": [
            {"provider": "demo", "id": "demo-chat", "alias": "chat", "weight": 3},
            {"provider": "oa", "id": "gpt-4o-mini", "alias": "chat"},
            {"provider": "oa", "id": "text-embedding-3-small"},
        ],
    }
    config = load_config(_write(tmp_path, document), env={"OPENAI_KEY": SECRET})
    assert config.listen.http == "0.0.0.0:9090"
    assert config.listen.grpc == "[::1]:6000"
    assert (config.workers, config.data_dir, config.max_request_mb) == (3, "/var/lib/modelyard", 8)
    assert [(p.name, p.type) for p in config.providers] == [("demo", "demo"), ("oa", "openai")]
    assert config.providers[1].data == {"apikey": SECRET, "organization": "org-1"}
    assert [(m.name, m.weight) for m in config.models] == [
        ("chat", 3),
        ("chat", 1),
        ("text-embedding-3-small", 1),
    ]


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    config = load_config(path, env={})
    assert config.listen.http == "127.0.0.1:8080"
    assert config.listen.grpc == "127.0.0.1:50051"
    assert (config.workers, config.providers, config.models) == (1, [], [])


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        pytest.param("$OPENAI_KEY", {"OPENAI_KEY": SECRET}, SECRET, id="dollar-name"),
        pytest.param("${OPENAI_KEY}", {"OPENAI_KEY": SECRET}, SECRET, id="dollar-braces"),
        pytest.param("$_under_1", {"_under_1": "v1"}, "v1", id="underscore-and-digit"),
        pytest.param("${A}", {"A": ""}, "", id="empty-but-set"),
        pytest.param("sk-$OPENAI_KEY", {"OPENAI_KEY": SECRET}, "sk-$OPENAI_KEY", id="not-whole-string"),
        pytest.param("pa$$word", {}, "pa$$word", id="literal-dollars"),
        pytest.param("$1abc", {}, "$1abc", id="not-an-identifier"),
        pytest.param("${OPENAI_KEY", {"OPENAI_KEY": SECRET}, "${OPENAI_KEY", id="unclosed-brace"),
    ],
)
def test_env_references_in_provider_data(value: str, env: dict[str, str], expected: str) -> None:
    config = parse_config({"providers": [{"name": "oa", "type": "openai", "data": {"apikey": value}}]}, env)
    assert config.providers[0].data["apikey"] == expected


def test_env_references_resolve_in_every_data_field() -> None:
    env = {"KEY": SECRET, "URL": "http://vllm.internal:8000/v1", "ORG": "org-9"}
    raw = _openai({"apiKey": "${KEY}", "baseURL": "$URL", "organization": "$ORG"})
    entry = parse_config(raw, env).providers[0]
    settings = PROVIDER_TYPES["openai"].settings.model_validate(entry.data)
    assert settings.apikey.get_secret_value() == SECRET  # type: ignore[attr-defined]
    assert settings.base_url == "http://vllm.internal:8000/v1"  # type: ignore[attr-defined]
    assert settings.organization == "org-9"  # type: ignore[attr-defined]


def test_env_references_resolve_in_endpoint_config_at_any_depth() -> None:
    config = {
        "aws_config": {
            "aws_region": "${REGION}",
            "aws_access_key_id": "$KEY_ID",
            "aws_secret_access_key": "$KEY",
        },
        "bedrock_provider": "$FAMILY",
    }
    endpoint = {
        "name": "c",
        "endpoint_type": "llm/v1/chat",
        "model": {"provider": "bedrock", "name": "m", "config": config},
    }
    env = {"REGION": "us-east-1", "KEY_ID": "AKIAEXAMPLEKEYID0000", "KEY": SECRET, "FAMILY": "cohere"}
    model = parse_config({"endpoints": [endpoint]}, env).endpoints[0].model
    assert model.config == {
        "aws_config": {
            "aws_region": "us-east-1",
            "aws_access_key_id": "AKIAEXAMPLEKEYID0000",
            "aws_secret_access_key": SECRET,
        },
        "bedrock_provider": "cohere",
    }
    assert model.translated.upstream_model(model.name) == "cohere.m"


def test_endpoint_errors_never_show_a_resolved_value() -> None:
    endpoint = {
        **_ENDPOINT,
        "model": {**_ENDPOINT["model"], "config": {"openai_api_key": "$KEY", "top_p": "$KEY"}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({"endpoints": [endpoint]}, {"KEY": SECRET})
    assert "default parameter 'top_p' has the wrong type" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_env_references_only_resolve_in_provider_data() -> None:
    config = parse_config({"data_dir": "$HOME"}, {"HOME": "/root"})
    assert config.data_dir == "$HOME"


@pytest.mark.parametrize("reference", ["$MISSING_KEY", "${MISSING_KEY}"])
def test_missing_env_var_names_key_path_and_variable(reference: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_openai({"apikey": reference}), {"OTHER": SECRET})
    text = str(caught.value)
    assert "providers[0].data.apikey" in text
    assert "MISSING_KEY" in text
    assert SECRET not in text


def test_missing_env_var_in_second_provider_names_its_index() -> None:
    raw = {
        "providers": [
            {"name": "a", "type": "openai", "data": {"apikey": "$A"}},
            {"name": "b", "type": "nim", "data": {"apikey": "k", "base_url": "${B_URL}"}},
        ]
    }
    with pytest.raises(ConfigError, match=r"providers\[1\]\.data\.base_url: .*B_URL"):
        parse_config(raw, {"A": SECRET})


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_openai({"apikey": "$KEY", "bogus": 1}), id="unknown-data-key"),
        pytest.param(_openai({"apikey": "$KEY", "base_url": "${KEY}"}), id="secret-in-bad-url"),
        pytest.param(_openai({"apikey": "$KEY", "organization": "$MISSING"}), id="other-var-missing"),
        pytest.param({**_openai({"apikey": "$KEY"}), "workers": 0}, id="unrelated-field"),
        pytest.param(_openai({"apikey": "$KEY"}, type_name="nope"), id="unknown-type"),
    ],
)
def test_config_errors_never_show_a_resolved_value(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {"KEY": SECRET})
    assert SECRET not in str(caught.value)


_PROVIDERS = [{"name": "demo", "type": "demo"}]

# (document, key path the message must name, another fragment it must contain)
BROKEN = [
    pytest.param(
        {"providers": [{"name": "x", "type": "nope"}]},
        "providers[0].type",
        "'nope'",
        id="unknown-provider-type",
    ),
    pytest.param({"providers": _PROVIDERS, "bogus": 1}, "bogus", "not permitted", id="unknown-top-level-key"),
    pytest.param(
        {"listen": {"http": "127.0.0.1:8080", "admin": "x:1"}}, "listen.admin", "", id="unknown-nested-key"
    ),
    pytest.param(
        {"providers": [{"name": "d", "type": "demo"}, {"name": "d", "type": "demo"}]},
        "providers[1].name",
        "d",
        id="duplicate-provider-names",
    ),
    pytest.param(
        {"providers": _PROVIDERS, "models": [{"provider": "ghost", "id": "m"}]},
        "models[0].provider",
        "'ghost'",
        id="model-with-missing-provider",
    ),
    pytest.param({"listen": {"http": "localhost"}}, "listen.http", "HOST:PORT", id="listen-without-port"),
    pytest.param({"listen": {"grpc": "127.0.0.1:70000"}}, "listen.grpc", "HOST:PORT", id="listen-port-range"),
    pytest.param(
        {"providers": _PROVIDERS, "models": [{"provider": "demo", "id": "m", "weight": 0}]},
        "models[0].weight",
        "greater than or equal to 1",
        id="weight-zero",
    ),
    pytest.param({"workers": 0}, "workers", "", id="workers-zero"),
    pytest.param(
        {"providers": [{"name": "bad name!", "type": "demo"}]}, "providers[0].name", "", id="bad-name"
    ),
    pytest.param(
        {"providers": [{"name": "oa", "type": "openai", "data": {"base_url": "https://x/v1"}}]},
        "providers[0].data",
        "apikey: missing",
        id="openai-without-apikey",
    ),
    pytest.param(
        {"providers": [{"name": "oa", "type": "openai", "data": {"apikey": "k", "bogus": 1}}]},
        "providers[0].data",
        "bogus: unknown argument",
        id="unknown-data-key",
    ),
    pytest.param(
        {"providers": [{"name": "oa", "type": "nim", "data": {"apikey": "k", "base_url": "ftp://x"}}]},
        "providers[0].data",
        "base_url:",
        id="bad-base-url",
    ),
    pytest.param(
        {"providers": [{"name": "oa", "type": "openai", "data": {"apikey": "$NOT_SET_ANYWHERE"}}]},
        "providers[0].data.apikey",
        "NOT_SET_ANYWHERE",
        id="missing-env-var",
    ),
    pytest.param(
        {"endpoints": [_ENDPOINT]},
        "endpoints[0].model.config.openai_api_key",
        "environment variable OPENAI_API_KEY is not set",
        id="endpoint-missing-env-var",
    ),
    pytest.param(
        {
            "endpoints": [{**_ENDPOINT, "model": {**_ENDPOINT["model"], "config": {"openai_api_key": "k"}}}]
            * 2
        },
        "endpoints[1].name",
        "'chat' is already the name of endpoints[0]",
        id="duplicate-endpoint-names",
    ),
    pytest.param(
        {
            "providers": _PROVIDERS,
            "models": [{"provider": "demo", "id": "m", "alias": "a"}],
            "routes": [
                {
                    "name": "r",
                    "task_type": "llm/v1/chat",
                    "destinations": [
                        {"name": "a", "traffic_percentage": 70},
                        {"name": "b", "traffic_percentage": 20},
                    ],
                }
            ],
        },
        "routes[0]",
        "traffic percentages sum to 90, not 100",
        id="route-percentages",
    ),
]


def _load_error(tmp_path: Path, document: Any) -> tuple[Path, str]:
    path = _write(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return path, str(caught.value)


@pytest.mark.parametrize(("document", "key_path", "fragment"), BROKEN)
def test_broken_file_error_names_file_and_key_path(
    tmp_path: Path, document: Any, key_path: str, fragment: str
) -> None:
    path, text = _load_error(tmp_path, document)
    assert text.startswith(f"{path}: ")
    assert key_path in text
    assert fragment in text


def test_duplicate_provider_error_names_the_repeated_name(tmp_path: Path) -> None:
    path, text = _load_error(tmp_path, {"providers": [{"name": "d", "type": "demo"}] * 2})
    assert text.startswith(f"{path}: ")
    assert "providers[1].name: 'd' is already the name of providers[0]" in text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("providers: [\n", "not valid YAML", id="bad-yaml"),
        pytest.param("- 1\n- 2\n", "top level must be a mapping", id="top-level-list"),
        pytest.param("just a string\n", "top level must be a mapping", id="top-level-string"),
    ],
)
def test_unparseable_file_names_the_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment in str(caught.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("0.0.0.0:1", True),
        ("localhost:65535", True),
        ("[::1]:50051", True),
        ("gateway.internal:443", True),
        ("127.0.0.1:0", False),
        ("127.0.0.1:65536", False),
        ("127.0.0.1", False),
        (":8080", False),
        ("::1:8080", False),
        ("http://127.0.0.1:8080", False),
        ("127.0.0.1:80a", False),
    ],
)
def test_listen_address_validation(address: str, ok: bool) -> None:
    raw = {"listen": {"http": address}}
    if ok:
        assert parse_config(raw, {}).listen.http == address
    else:
        with pytest.raises(ConfigError, match=r"listen\.http"):
            parse_config(raw, {})


@pytest.mark.parametrize(
    ("data", "apikey", "base_url"),
    [
        pytest.param({"apikey": "k1"}, "k1", "https://api.openai.com/v1", id="lowercase-default-url"),
        pytest.param(
            {"apiKey": "k2", "baseURL": "http://localhost:8000/v1"}, "k2", "http://localhost:8000/v1"
        ),
        pytest.param(
            {"api_key": "k3", "baseUrl": "https://groq.example/v1"}, "k3", "https://groq.example/v1"
        ),
        pytest.param({"apikey": "k4", "api_base": "https://x.example/v1"}, "k4", "https://x.example/v1"),
    ],
)
def test_openai_accepts_ibm_spellings(data: dict[str, str], apikey: str, base_url: str) -> None:
    entry = parse_config(_openai(data), {}).providers[0]
    settings = PROVIDER_TYPES["openai"].settings.model_validate(entry.data)
    assert settings.apikey.get_secret_value() == apikey  # type: ignore[attr-defined]
    assert settings.base_url == base_url  # type: ignore[attr-defined]
    assert apikey not in repr(settings)


@pytest.mark.parametrize(
    ("type_name", "data", "base_url"),
    [
        ("cerebras", {"apiKey": "k"}, "https://api.cerebras.ai/v1"),
        ("nim", {"apiKey": "k"}, "https://integrate.api.nvidia.com/v1"),
        ("cerebras", {"apiKey": "k", "baseURL": "http://cb.local:1/v1"}, "http://cb.local:1/v1"),
        ("nim", {"apikey": "k", "base_url": "http://nim.local:2/v1"}, "http://nim.local:2/v1"),
    ],
)
def test_presets_default_and_override_base_url(type_name: str, data: dict[str, str], base_url: str) -> None:
    entry = parse_config(_openai(data, type_name=type_name), {}).providers[0]
    settings = PROVIDER_TYPES[type_name].settings.model_validate(entry.data)
    assert settings.base_url == base_url  # type: ignore[attr-defined]
    assert settings.apikey.get_secret_value() == "k"  # type: ignore[attr-defined]


@pytest.mark.parametrize("type_name", ["openai", "cerebras", "nim"])
def test_openai_family_rejects_non_http_base_url(type_name: str) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        parse_config(_openai({"apikey": "k", "base_url": "ftp://x/v1"}, type_name=type_name), {})


def test_quickstart_loads() -> None:
    config = load_config(QUICKSTART, env={})
    assert [(p.name, p.type) for p in config.providers] == [("demo", "demo")]
    assert {m.name for m in config.models} == {"demo/chat", "demo/embed"}
    assert all(m.provider == "demo" for m in config.models)
    tasks = {m.name: set(m.tasks or ()) for m in config.models}
    assert "embeddings" in tasks["demo/embed"]
    assert "chat" in tasks["demo/chat"]


@pytest.mark.parametrize(
    ("tasks", "ok"),
    [
        (None, True),
        (["chat"], True),
        (["chat", "completions", "embeddings"], True),
        ([], False),
        (["images"], False),
        ("chat", False),
    ],
)
def test_model_tasks(tasks: Any, ok: bool) -> None:
    model: dict[str, Any] = {"provider": "demo", "id": "m"}
    if tasks is not None:
        model["tasks"] = tasks
    raw = {"providers": _PROVIDERS, "models": [model]}
    if ok:
        assert parse_config(raw, {}).models[0].tasks == (tuple(tasks) if tasks else None)
    else:
        with pytest.raises(ConfigError, match=r"models\[0\]\.tasks"):
            parse_config(raw, {})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "config", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_config_check_accepts_quickstart() -> None:
    result = _cli(str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "1 providers, 2 models" in result.stdout


def test_cli_config_check_rejects_broken_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"providers": _PROVIDERS, "models": [{"provider": "demo", "id": "m", "weight": 0}]}
    )
    result = _cli(str(path))
    assert result.returncode == 2
    assert "config error" in result.stderr
    assert str(path) in result.stderr
    assert "models[0].weight" in result.stderr
    assert "Traceback" not in result.stderr
