"""`chctl search TEXT [--json]`: the servers whose name holds TEXT, from the curated list and every MCP registry
in CH_REGISTRY_URL. The daemon asks the registries and keeps their answers (so a second search costs what
`chctl status` costs, and works while a registry is down); this prints them. Standard library only; `chctl
search TEXT` skips argparse like `chctl status` does (`parse_fast`).
"""

from __future__ import annotations

import sys

from context_harness.client.output import print_json, table, terminal_width, use_colour, when
from context_harness.client.rpc_client import call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

STATUS_COLOURS = {"deprecated": "yellow", "deleted": "red"}
ADD_NOTE = "add one with `chctl add NAME` (a registry's NAMESPACE/NAME as it is shown)"


def add_search_parser(sub: Any) -> None:
    from context_harness.client.arguments import add_json_flag

    p = sub.add_parser(
        "search",
        help="find servers in the MCP registries (CH_REGISTRY_URL) and chctl's own list",
        description="The servers whose name holds TEXT (chctl's own list: or whose description does), from "
        "every registry in CH_REGISTRY_URL (the official MCP Registry by default). Answers are cached; when a "
        "registry cannot be reached, its last answer is shown with its age.",
    )
    p.add_argument("text", metavar="TEXT", help='part of the name, e.g. "weather" ("" lists everything, capped)')
    add_json_flag(p)
    p.set_defaults(func=cmd_search)


def parse_fast(args_list: Sequence[str]) -> dict[str, Any] | None:
    """`search TEXT` and `search TEXT --json` as argparse would parse them; None for anything else."""
    if len(args_list) not in (2, 3) or args_list[0] != "search" or args_list[1].startswith("-"):
        return None
    if len(args_list) == 3 and args_list[2] != "--json":
        return None
    return {"text": args_list[1], "json": len(args_list) == 3}


def cmd_search(args: argparse.Namespace) -> int:
    result = call("registry.search", {"text": args.text})
    if args.json:
        print_json(result)
        return 0
    servers = result["servers"]
    several = len(result["registries"]) > 1
    if servers:
        print(_table(servers, several))
    else:
        print(f"no server's name holds {args.text!r}")
    for line in _notes(result):
        print(printable(line), file=sys.stderr)  # a registry's words among them: no control characters
    return 0


def _table(servers: list[dict[str, Any]], several: bool) -> str:
    header = ["NAME", "DESCRIPTION", "TRANSPORT", "AUTH", "STATUS", *(["REGISTRY"] if several else [])]
    rows = [header]
    colours: list[str | None] = []
    for server in servers:
        row = [
            server["name"],
            server.get("description") or server.get("title") or "",
            server["transport"],
            server["auth"],
            server["status"],
        ]
        rows.append(row + ([server["registry"]] if several else []))
        colours.append(STATUS_COLOURS.get(server["status"]))
    return table(rows, colours if use_colour() else None, colour_column=4, width=terminal_width(), cut=1)


def _notes(result: dict[str, Any]) -> list[str]:
    """How old each registry's answer is, and what went wrong where."""
    notes = []
    for registry in result["registries"]:
        host, count = registry["host"], registry["servers"]
        age = when(registry["fetched_at"]) if registry["fetched_at"] is not None else None
        if registry["error"] and age is None:
            notes.append(f"warning: {registry['error']}")
            continue
        if registry["error"]:
            notes.append(f"warning: {registry['error']}: showing its answer from the cache, {age}")
        elif registry["from_cache"]:
            notes.append(f"{host}: {count} servers, from the cache ({age})")
        else:
            notes.append(f"{host}: {count} servers, asked just now")
        if registry["skipped"]:
            notes.append(f"{host}: {registry['skipped']} entries left out (they do not fit the registry's schema)")
        if registry["stopped"]:
            notes.append(f"{host}: there may be more: {registry['stopped']}")
    notes += [f"warning: {warning}" for warning in result["warnings"]]
    if result["servers"]:
        notes.append(ADD_NOTE)
    return notes
