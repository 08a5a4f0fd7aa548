"""ConfigWatcher against real files: what it applies, what it rejects and what it logs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml
from modelyard.config import GatewayConfig, load_config
from modelyard.reload import DEFAULT_INTERVAL_S, INTERVAL_ENV, ConfigWatcher, reload_interval


def _write(path: Path, document: object) -> None:
    """Replace the file the way editors and config managers do: write aside, rename over."""
    staged = path.with_suffix(".tmp")
    staged.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    os.replace(staged, path)


def _config(model_id: str, **extra: object) -> dict[str, object]:
    return {
        "providers": [{"name": "demo", "type": "demo"}],
        "models": [{"provider": "demo", "id": model_id, "alias": "live"}],
        **extra,
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, ConfigWatcher, list[GatewayConfig]]:
    path = tmp_path / "modelyard.yaml"
    _write(path, _config("gen-1"))
    applied: list[GatewayConfig] = []
    return path, ConfigWatcher(path, load_config(path), applied.append), applied


def _model_ids(config: GatewayConfig) -> list[str]:
    return [model.id for model in config.models]


def test_an_unchanged_file_is_not_reloaded(setup: tuple[Path, ConfigWatcher, list[GatewayConfig]]) -> None:
    path, watcher, applied = setup
    assert watcher.check() is False
    path.touch()  # new mtime, same bytes
    assert watcher.check() is False
    assert applied == []


def test_a_valid_change_is_applied_and_counted(
    setup: tuple[Path, ConfigWatcher, list[GatewayConfig]], caplog: pytest.LogCaptureFixture
) -> None:
    path, watcher, applied = setup
    _write(path, _config("gen-2"))
    with caplog.at_level(logging.INFO, "modelyard.reload"):
        assert watcher.check() is True
    assert [_model_ids(c) for c in applied] == [["gen-2"]]
    assert watcher.generation == 2
    assert f"config reloaded from {path} (generation 2)" in caplog.text


def test_an_invalid_change_is_rejected_with_the_problem_named(
    setup: tuple[Path, ConfigWatcher, list[GatewayConfig]], caplog: pytest.LogCaptureFixture
) -> None:
    path, watcher, applied = setup
    broken = _config("gen-2")
    broken["routes"] = [
        {
            "name": "split",
            "task_type": "llm/v1/chat",
            "destinations": [{"name": "live", "traffic_percentage": 90}],
            "routing_strategy": "TRAFFIC_SPLIT",
        }
    ]
    _write(path, broken)
    with caplog.at_level(logging.ERROR, "modelyard.reload"):
        assert watcher.check() is False
    assert applied == []
    assert watcher.generation == 1
    assert "config reload rejected, keeping the last good config" in caplog.text
    assert "100" in caplog.text  # the percentages must sum to 100
    _write(path, "providers: [unclosed\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR, "modelyard.reload"):
        assert watcher.check() is False
    assert "not valid YAML" in caplog.text
    _write(path, _config("gen-3"))
    assert watcher.check() is True
    assert [_model_ids(c) for c in applied] == [["gen-3"]]


def test_a_failing_apply_keeps_the_running_config_and_never_logs_the_exception_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "modelyard.yaml"
    _write(path, _config("gen-1"))

    def apply(config: GatewayConfig) -> None:
        raise ValueError("sk-would-be-a-secret")

    watcher = ConfigWatcher(path, load_config(path), apply)
    _write(path, _config("gen-2"))
    with caplog.at_level(logging.ERROR, "modelyard.reload"):
        assert watcher.check() is False
    assert watcher.generation == 1
    assert "a provider could not be built (ValueError)" in caplog.text
    assert "sk-would-be-a-secret" not in caplog.text


def test_restart_only_settings_keep_their_running_values(
    setup: tuple[Path, ConfigWatcher, list[GatewayConfig]], caplog: pytest.LogCaptureFixture
) -> None:
    path, watcher, applied = setup
    _write(path, _config("gen-2", workers=3, max_request_mb=8))
    with caplog.at_level(logging.WARNING, "modelyard.reload"):
        assert watcher.check() is True
    (config,) = applied
    assert (config.workers, config.max_request_mb) == (1, 32)
    assert _model_ids(config) == ["gen-2"]
    assert "workers, max_request_mb changed" in caplog.text


def test_a_missing_file_is_reported_once_and_its_return_picked_up(
    setup: tuple[Path, ConfigWatcher, list[GatewayConfig]], caplog: pytest.LogCaptureFixture
) -> None:
    path, watcher, applied = setup
    path.unlink()
    with caplog.at_level(logging.WARNING, "modelyard.reload"):
        assert watcher.check() is False
        assert watcher.check() is False
    assert caplog.text.count("is missing") == 1
    _write(path, _config("gen-2"))
    assert watcher.check() is True
    assert [_model_ids(c) for c in applied] == [["gen-2"]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", DEFAULT_INTERVAL_S), ("0.25", 0.25), ("0", 0.0), ("-3", 0.0), ("soon", DEFAULT_INTERVAL_S)],
)
def test_reload_interval_from_the_environment(value: str, expected: float) -> None:
    assert reload_interval({INTERVAL_ENV: value}) == expected
