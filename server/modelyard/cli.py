"""The `modelyard` command."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from modelyard import __version__
from modelyard.config import ConfigError, GatewayConfig, expand, load_config, parse_config


def _serve_overrides(args: argparse.Namespace, config: GatewayConfig) -> dict[str, Any]:
    listen = config.listen.model_dump()
    if args.http:
        listen["http"] = args.http
    if args.grpc:
        listen["grpc"] = args.grpc
    overrides: dict[str, Any] = {"listen": listen}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.metrics is not None:
        overrides["metrics"] = {**config.metrics.model_dump(), "listen": args.metrics}
    return overrides


def cmd_serve(args: argparse.Namespace) -> int:
    from modelyard.supervisor import ServeOptions, Supervisor

    config = load_config(args.config)
    raw = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    effective = parse_config({**raw, **_serve_overrides(args, config)})
    return Supervisor(ServeOptions(args.config, effective)).run()


def cmd_config_check(args: argparse.Namespace) -> int:
    expanded = expand(load_config(args.file))
    aliases = {m.name for m in expanded.models}
    print(
        f"{args.file}: OK ({len(expanded.providers)} providers, {len(aliases)} models, "
        f"{len(expanded.routes)} routes)"
    )
    return 0


class Parser(argparse.ArgumentParser):
    """Never echoes an unrecognised word: a key typed in the wrong place must not reach a terminal log."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"invalid choice: '[^']*'", "invalid choice", message)
        message = re.sub(r"unrecognized arguments: .*", "unrecognized arguments", message)
        super().error(message)


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    from modelyard.secrets.keys import MasterKey
    from modelyard.secrets.vault import SecretVault
    from modelyard.store.sqlite import STORE_FILENAME, SqliteStore

    data_dir = Path(args.data_dir)
    if not (data_dir / STORE_FILENAME).exists():
        print(f"modelyard: no store in {data_dir}", file=sys.stderr)
        return 1
    store = SqliteStore(data_dir / STORE_FILENAME)
    try:
        report = SecretVault(MasterKey.load(data_dir), store).rotate_kek(batch=args.batch)
    finally:
        store.close()
    print(
        f"KEK v{report.from_version} -> v{report.to_version}: {report.rewrapped} secrets re-wrapped", end=""
    )
    print(f", {len(report.failed)} could not be opened: {', '.join(report.failed)}" if report.failed else "")
    return 1 if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    from modelyard.admin_cli import register as register_admin

    parser = Parser(prog="modelyard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"modelyard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    register_admin(commands)  # type: ignore[arg-type]  # Parser is an ArgumentParser
    secrets = commands.add_parser("secrets", help="credential encryption tools")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    rotate = secrets_commands.add_parser(
        "rotate-kek", help="re-wrap every stored secret's data key under a new KEK (safe while serving)"
    )
    rotate.add_argument("--data-dir", default=".modelyard", help="the gateway's data directory")
    rotate.add_argument("--batch", type=int, default=100)
    rotate.set_defaults(handler=cmd_rotate_kek)

    serve = commands.add_parser("serve", help="run the gateway (Envoy + workers)")
    serve.add_argument("--config", type=Path, required=True, help="YAML config file")
    serve.add_argument("--http", help="REST listen address HOST:PORT (overrides the file)")
    serve.add_argument("--grpc", help="gRPC listen address HOST:PORT (overrides the file)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides the file)")
    serve.add_argument("--metrics", help="Prometheus /metrics address HOST:PORT (overrides the file)")
    serve.add_argument("--data-dir", help="state directory (overrides the file)")
    serve.set_defaults(handler=cmd_serve)

    config = commands.add_parser("config", help="config file tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file without starting")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.handler(args))
    except ConfigError as exc:
        print(f"modelyard: config error: {exc}", file=sys.stderr)
        sys.exit(2)
