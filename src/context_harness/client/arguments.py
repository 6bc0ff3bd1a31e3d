"""The arguments several chctl commands share: which config a command acts on, and `--json`. Standard library only.

chctl.py and the modules that add their own commands (import_cmd.py, ...) all take these from here, so none of
them imports chctl.py back.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

# What `--client` accepts, the default first: the daemon's config.format.CLIENTS (not imported: chctl must start
# fast; tests/test_client_imports.py keeps the two equal).
CLIENTS = ("opencode", "claude-code", "codex", "gemini", "cursor", "vscode")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_target(parser: argparse.ArgumentParser, *, many_clients: bool = False) -> None:
    """--project DIR | --global, and --client (once, or repeatable with `many_clients`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--project", metavar="DIR", help="DIR's config (opencode.json[c], .mcp.json, ...)")
    group.add_argument("--global", dest="global_", action="store_true", help="the client's user-level config")
    parser.add_argument(
        "--client",
        dest="clients",
        action="append" if many_clients else "store",
        choices=CLIENTS,
        help=f"whose config: {CLIENTS[0]} (default), {', '.join(CLIENTS[1:])}"
        + (" (repeatable)" if many_clients else ""),
    )


def target(args: argparse.Namespace) -> dict[str, Any]:
    """The RPC params that name the config `add_target`'s arguments chose; relative paths made absolute here."""
    params: dict[str, Any] = {"cwd": os.getcwd()}
    if args.project:
        params["project"] = os.path.abspath(args.project)
    if args.global_:
        params["global"] = True
    client = getattr(args, "clients", None)
    if isinstance(client, str):
        params["client"] = client
    return params


def clients_of(args: argparse.Namespace) -> list[str]:
    """The repeatable --client's values, each once, in order; opencode when none was given."""
    return list(dict.fromkeys(args.clients or ["opencode"]))
