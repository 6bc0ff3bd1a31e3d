"""`chctl check [NAME...]`: ask each server, through the daemon and with its current credential, whether it
answers as an MCP server (`initialize`, `tools/list`, end of session). One line per server; on a failure, the
next thing to do. Exit 0 when all answer, 1 when any needs a person (a login, a scope), 2 when any fails.
Standard library only.
"""

from __future__ import annotations

import os

from context_harness.client.arguments import add_json_flag
from context_harness.client.output import HINT_PREFIX, paint, print_json, use_colour
from context_harness.client.rpc_client import call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT = {"ok": 0, "attention": 1, "failed": 2}
MARKS = {"ok": ("✓", "green"), "attention": ("!", "yellow"), "failed": ("✗", "red")}
OUTCOME_WORDS = {
    "ok": "ok",
    "dns": "DNS",
    "connect": "cannot connect",
    "proxy": "proxy",
    "certificate": "certificate",
    "timeout": "timeout",
    "unauthorized": "unauthorized",
    "forbidden": "forbidden",
    "protocol": "protocol",
    "config": "config",
}


def add_check_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="ask each server whether it answers (initialize, tools/list) with its current credential",
        description="A live probe, for troubleshooting: through the daemon, its proxy and its trust store, "
        "with the current credential, exactly the path an agent's traffic takes. Exit 0: all answer; "
        "1: one needs a login or a scope; 2: one fails.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="the servers (default: every bound one)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS", help="per server (default 20)")
    add_json_flag(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    result = call("check", {"names": args.names or None, "timeout_s": args.timeout, "cwd": os.getcwd()})
    servers: list[dict[str, Any]] = result["servers"]
    if args.json:
        print_json(servers)
    elif not servers:
        print("no servers bound: `chctl add NAME ...` first")
    else:
        colour = use_colour()
        for server in servers:
            mark, name = MARKS[server["level"]]
            print(f"{paint(mark, name) if colour else mark} {printable(line(server))}")
            if server["level"] != "ok" and server.get("next_action"):
                print(f"{HINT_PREFIX}{printable(server['next_action'])}")
            if server.get("note"):
                print(f"  note: {printable(server['note'])}")
    return max((EXIT[s["level"]] for s in servers), default=0)


def line(server: dict[str, Any]) -> str:
    """`name: ok · srv 1.2 · MCP 2025-06-18 · 12 tools · 85 ms · via proxy:3128`, or the outcome and why."""
    parts = [f"{server['name']}: {OUTCOME_WORDS.get(server['outcome'], server['outcome'])}"]
    if server["outcome"] == "ok":
        about = " ".join(p for p in (server.get("server_name"), server.get("server_version")) if p)
        if about:
            parts.append(about)
        if server.get("protocol_version"):
            parts.append(f"MCP {server['protocol_version']}")
        parts.append(f"{server['tools']} tool{'' if server['tools'] == 1 else 's'}")
    else:
        parts[0] += f" — {server['message']}"
    parts.append(f"{server['elapsed_ms']} ms")
    parts.append(f"via {server['proxy']}" if server.get("proxy") else "direct")
    return " · ".join(parts)
