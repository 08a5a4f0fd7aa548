"""A fake HashiCorp Vault KV v2 read API on loopback, for the secrets tests.

Speaks what ``hvac``'s ``secrets.kv.v2.read_secret_version`` sends and expects:

* ``GET /v1/{mount}/data/{path}[?version=N]`` with an ``X-Vault-Token`` header;
* 200 ``{"data": {"data": {...}, "metadata": {...}}, ...}`` (Vault's full envelope), with
  ``Content-Type: application/json`` exactly (hvac only parses JSON bodies labelled so);
* 403 ``{"errors": ["permission denied"]}`` for a missing or wrong token;
* 404 ``{"errors": []}`` for an unknown mount or path, and for a deleted latest version the 404 body
  Vault sends then (``data: null`` plus metadata whose ``deletion_time`` is set).

Every request is recorded (method, path, query, headers) so tests can check hvac's real request
shape. Runs an ``http.server.ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread::

    with FakeVault(token="t") as vault:
        vault.put("secret", "openai/prod", {"apikey": "sk-..."})
        ... VAULT_ADDR=vault.url, VAULT_TOKEN="t" ...
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CREATED_TIME = "2024-05-01T12:00:00.000000Z"
DELETION_TIME = "2024-05-02T12:00:00.000000Z"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class _Secret:
    versions: list[dict[str, Any]] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)


class FakeVault:
    def __init__(self, token: str = "fake-root-token", mounts: tuple[str, ...] = ("secret",)) -> None:
        self.token = token
        self.mounts = set(mounts)
        self.requests: list[RecordedRequest] = []
        self._secrets: dict[tuple[str, str], _Secret] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # data
    def put(self, mount: str, path: str, data: dict[str, Any]) -> int:
        """Write a new version of a secret; returns its version number."""
        with self._lock:
            self.mounts.add(mount)
            secret = self._secrets.setdefault((mount, path), _Secret())
            secret.versions.append(dict(data))
            return len(secret.versions)

    def delete_latest(self, mount: str, path: str) -> None:
        with self._lock:
            secret = self._secrets[(mount, path)]
            secret.deleted.add(len(secret.versions))

    def reads(self, mount: str, path: str) -> int:
        """How many GETs asked for this secret (whatever the answer)."""
        wanted = f"/v1/{mount}/data/{path}"
        with self._lock:
            return sum(1 for r in self.requests if r.method == "GET" and r.path == wanted)

    # server
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeVault:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                vault._handle(self)

            def do_POST(self) -> None:
                vault._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-vault", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVault:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # protocol
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        with self._lock:
            self.requests.append(
                RecordedRequest(handler.command, path, parse_qs(split.query), dict(handler.headers.items()))
            )
        if handler.headers.get("X-Vault-Token") != self.token:
            return self._send(handler, 403, {"errors": ["permission denied"]})
        if handler.command != "GET":
            return self._send(handler, 405, {"errors": ["unsupported operation"]})
        mount, sep, secret_path = path.removeprefix("/v1/").partition("/data/")
        if not path.startswith("/v1/") or not sep or mount not in self.mounts:
            return self._send(handler, 404, {"errors": [f"no handler for route '{path[4:]}'"]})
        with self._lock:
            secret = self._secrets.get((mount, secret_path))
            if secret is None or not secret.versions:
                return self._send(handler, 404, {"errors": []})
            requested = parse_qs(split.query).get("version", ["0"])[0]
            version = int(requested) or len(secret.versions)
            if not 1 <= version <= len(secret.versions):
                return self._send(handler, 404, {"errors": []})
            deleted = version in secret.deleted
            metadata = {
                "created_time": CREATED_TIME,
                "custom_metadata": None,
                "deletion_time": DELETION_TIME if deleted else "",
                "destroyed": False,
                "version": version,
            }
            data = None if deleted else dict(secret.versions[version - 1])
        body = {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": {"data": data, "metadata": metadata},
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }
        return self._send(handler, 404 if deleted else 200, body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
