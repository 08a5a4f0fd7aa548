"""`modelyard tenant|providers|models|keys|audit`: the Admin API from the command line.

Each subcommand makes gRPC calls to a running gateway (`--target`, default $MODELYARD_GRPC or
127.0.0.1:50051) with an admin key (`--key`, default $MODELYARD_KEY) and prints aligned tables, or
JSON with `--json`. Exit status: 0, 1 when the gateway answers an error or cannot be reached, 2 for
usage errors. This module only declares the command line; the handlers (and grpc) load on use.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any, TypeAlias

SCOPES = ("admin", "inference")
UINT32_MAX = 2**32 - 1
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Handler = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# Argument types. Their messages never repeat the value: it may be a credential typed in the wrong place.


def key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return name, value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def duration(text: str) -> int:
    """Seconds from "90", "90s", "15m", "12h", "30d", "2w" or combinations such as "1d12h"."""
    if text.isdigit():
        return int(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError("expected a duration such as 3600, 90m, 12h, 30d or 2w")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def uint32(text: str) -> int:
    if not text.isdigit() or int(text) > UINT32_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {UINT32_MAX}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return value


# The command tree.


def common_options() -> argparse.ArgumentParser:
    """Options of every admin command, accepted after the group (`keys --json list`) or the command.

    Their defaults are applied when the command runs (modelyard.admin_cli_session), so a value given
    at either level is kept and the environment is read at run time.
    """
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("gateway options")
    group.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help="the gateway's gRPC address (default: $MODELYARD_GRPC, else 127.0.0.1:50051)",
    )
    group.add_argument(
        "--key",
        default=argparse.SUPPRESS,
        help="admin API key (default: $MODELYARD_KEY; prefer it: arguments are visible to other users)",
    )
    group.add_argument(
        "--tenant",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="act on this tenant (operator key only; sends x-modelyard-tenant)",
    )
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    group.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="deadline of each call (default: 10)",
    )
    return common


def dispatch(name: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        from modelyard.admin_cli_commands import run

        return run(name, args)

    handler.__qualname__ = handler.__name__ = "admin_" + name.replace(" ", "_")
    return handler


class Tree:
    """Adds groups and commands, each with the common options and its handler."""

    def __init__(self, commands: Subparsers) -> None:
        self.commands = commands
        self.common = common_options()

    def group(self, name: str, text: str) -> Subparsers:
        parser = self.commands.add_parser(name, help=text, description=text, parents=[self.common])
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    def command(self, group: Subparsers, name: str, text: str, handler: str) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=text, description=text, parents=[self.common])
        parser.set_defaults(handler=dispatch(handler))
        return parser


def add_tenant(tree: Tree) -> None:
    group = tree.group("tenant", "the caller's tenant; the operator key creates and lists tenants")
    create = tree.command(group, "create", "create a tenant and its first admin key", "tenant create")
    create.add_argument("name")
    create.add_argument("--secrets-manager", metavar="URL", help="the tenant's external secrets manager")
    tree.command(group, "show", "show the tenant", "tenant show")
    tree.command(group, "list", "list every tenant (operator key)", "tenant list")
    update = tree.command(group, "update", "rename the tenant or change its secrets manager", "tenant update")
    update.add_argument("--name")
    update.add_argument("--secrets-manager", metavar="URL", help='"" removes it')
    delete = tree.command(group, "delete", "delete the tenant with everything in it", "tenant delete")
    delete.add_argument("--yes", action="store_true", help="confirm the deletion")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="KEY=VALUE",
        type=key_value,
        nargs="+",
        action="extend",
        help="a provider argument (a string; repeatable); wins over --data-json",
    )
    parser.add_argument(
        "--data-json",
        metavar="JSON",
        type=json_object,
        help="provider arguments as a JSON object (nested values; null removes one on update)",
    )


def add_providers(tree: Tree) -> None:
    group = tree.group("providers", "providers and their credentials")
    add = tree.command(group, "add", "add a provider", "providers add")
    add.add_argument("type", help="openai, watsonxai, azure-openai, anthropic, bedrock, ...")
    add.add_argument("--name", required=True)
    add_data_options(add)
    tree.command(group, "list", "list the providers", "providers list")
    show = tree.command(group, "show", "show a provider (secrets masked)", "providers show")
    show.add_argument("uuid")
    update = tree.command(group, "update", "rename a provider or change some arguments", "providers update")
    update.add_argument("uuid")
    update.add_argument("--name")
    add_data_options(update)
    delete = tree.command(group, "delete", "delete a provider and its models", "providers delete")
    delete.add_argument("uuid")


def add_models(tree: Tree) -> None:
    group = tree.group("models", "the models enabled on providers")
    add = tree.command(group, "add", "enable a provider's model", "models add")
    add.add_argument("provider_uuid")
    add.add_argument("model_id", help="the provider's model (or deployment) id")
    add.add_argument("--alias", help="what clients send as `model` (default: MODEL_ID)")
    listing = tree.command(group, "list", "list one provider's models, or every provider's", "models list")
    listing.add_argument("provider_uuid", nargs="?")
    remove = tree.command(group, "remove", "disable a model", "models remove")
    remove.add_argument("provider_uuid")
    remove.add_argument("model", metavar="MODEL_ID_OR_ALIAS")


def add_keys(tree: Tree) -> None:
    group = tree.group("keys", "the tenant's API keys")
    create = tree.command(group, "create", "create a key (its secret is shown once)", "keys create")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        dest="scopes",
        choices=SCOPES,
        nargs="+",
        action="extend",
        required=True,
        help="what the key may do (repeatable)",
    )
    create.add_argument(
        "--model",
        dest="models",
        metavar="ALIAS",
        nargs="+",
        action="extend",
        help="an alias the key may use (repeatable; default: every alias)",
    )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-at", metavar="UNIX", type=uint32, help="expiry time, Unix seconds")
    expiry.add_argument("--expires-in", metavar="DURATION", type=duration, help="e.g. 90m, 12h, 30d")
    tree.command(group, "list", "list the keys (without their secrets)", "keys list")
    delete = tree.command(group, "delete", "revoke a key", "keys delete")
    delete.add_argument("id")


def add_audit(tree: Tree) -> None:
    text = "the tenant's audit trail"
    parser = tree.commands.add_parser("audit", help=text, description=text, parents=[tree.common])
    parser.set_defaults(handler=dispatch("audit"))
    parser.add_argument("--limit", type=uint32, metavar="N", help="at most N entries")
    parser.add_argument("--before", type=uint32, metavar="SEQ", help="only entries older than SEQ")


def add_usage(tree: Tree) -> None:
    text = "usage from the ledger: requests, errors, tokens and cost per period"
    parser = tree.commands.add_parser("usage", help=text, description=text, parents=[tree.common])
    parser.set_defaults(handler=dispatch("usage"))
    parser.add_argument(
        "--group-by",
        default="model",
        metavar="DIMS",
        help="comma-separated: tenant, key, model, provider, deployment (default: model)",
    )
    parser.add_argument("--bucket", default="day", choices=("minute", "hour", "day", "none"))
    parser.add_argument(
        "--since", type=duration, metavar="DURATION", help="only the last DURATION (e.g. 24h)"
    )
    parser.add_argument("--all-tenants", action="store_true", help="every tenant's usage (operator key)")


def register(commands: Subparsers) -> None:
    """Add `tenant`, `providers`, `models`, `keys`, `audit` and `usage` to the `modelyard` command."""
    tree = Tree(commands)
    for add in (add_tenant, add_providers, add_models, add_keys, add_audit, add_usage):
        add(tree)
