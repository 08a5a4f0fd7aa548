"""Hot reload of the config file: each worker polls it and swaps in a changed, valid config.

Polling (stat every `interval` seconds, then a content hash) works the same on every filesystem
and catches editors that replace the file by renaming over it. A config that fails to load, or
whose providers cannot be built, is rejected with one logged error and the last good config
keeps serving. Settings that shape the process itself need a restart: a change to them is
logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelyard.config import ConfigError, GatewayConfig, load_config
from modelyard.dialects.external import DialectError
from modelyard.errors import GatewayError

log = logging.getLogger("modelyard.reload")

INTERVAL_ENV = "MODELYARD_RELOAD_INTERVAL"
DEFAULT_INTERVAL_S = 1.0
RESTART_ONLY = (
    "listen",
    "workers",
    "data_dir",
    "max_request_mb",
    "usage",
    "metrics",
    "tracing",
    "access_log",
)
"""Settings a running worker cannot change: they keep their startup values until a restart."""


def reload_interval(env: Mapping[str, str] = os.environ) -> float:
    """Seconds between checks; 0 turns reloading off. A malformed value keeps the default."""
    text = env.get(INTERVAL_ENV, "")
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        log.warning("%s=%r is not a number; checking every %s s", INTERVAL_ENV, text, DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S
    return max(value, 0.0)


@dataclass(frozen=True)
class FileStamp:
    inode: int
    size: int
    mtime_ns: int


def _stamp(path: Path) -> FileStamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return FileStamp(info.st_ino, info.st_size, info.st_mtime_ns)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


Apply = Callable[[GatewayConfig], None]


class ConfigWatcher:
    """Watches one config file and hands each changed, valid version to `apply`."""

    def __init__(self, path: Path, running: GatewayConfig, apply: Apply, generation: int = 1) -> None:
        self._path = path
        self._running = running
        self._apply = apply
        self._stamp = _stamp(path)
        self._digest = _digest(path)
        self._missing_logged = False
        self.generation = generation

    def check(self) -> bool:
        """Look at the file once; True when a new config was applied."""
        stamp = _stamp(self._path)
        if stamp is None:
            if not self._missing_logged:
                log.warning("config file %s is missing; keeping the last good config", self._path)
                self._missing_logged = True
            return False
        self._missing_logged = False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        digest = _digest(self._path)
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return self._load()

    def _load(self) -> bool:
        try:
            config = load_config(self._path)
        except ConfigError as exc:
            log.error("config reload rejected, keeping the last good config: %s", exc)
            return False
        config = self._keep_restart_only(config)
        try:
            self._apply(config)
        except Exception as exc:  # a provider that cannot be built from otherwise valid settings
            log.error(
                "config reload rejected, keeping the last good config: %s: %s", self._path, _describe(exc)
            )
            return False
        self._running = config
        self.generation += 1
        log.info("config reloaded from %s (generation %d)", self._path, self.generation)
        return True

    def _keep_restart_only(self, config: GatewayConfig) -> GatewayConfig:
        changed = [name for name in RESTART_ONLY if getattr(config, name) != getattr(self._running, name)]
        if not changed:
            return config
        log.warning(
            "config reload: %s changed in %s but only take effect on restart; keeping the running values",
            ", ".join(changed),
            self._path,
        )
        return config.model_copy(update={name: getattr(self._running, name) for name in changed})

    async def run(self, interval: float) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


def _describe(exc: Exception) -> str:
    # Only our own errors are phrased to name fields, never values; others may echo a credential.
    if isinstance(exc, (ConfigError, DialectError, GatewayError)):
        return str(exc)
    return f"a provider could not be built ({type(exc).__name__})"
