"""`chctl import opencode|mcp-remote`: adopt the logins those tools already hold. Standard library only.

chctl finds the source where the tool keeps it for this user; the daemon reads it (never writes it),
adopts each login and reports what became of it.
"""

from __future__ import annotations

import os
import time

from context_harness.client.arguments import add_json_flag, add_target, target
from context_harness.client.output import print_json, table, when
from context_harness.client.rpc_client import call

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

OUTCOMES = {
    "adopted": "adopted",
    "refreshed": "adopted, token refreshed",
    "would_adopt": "would adopt",
    "retrying": "adopted; refresh failing, the daemon retries",
    "skipped": "skipped",
}


def add_import_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="adopt the logins opencode or mcp-remote hold (no new login)",
        description="Adopt the OAuth logins another tool holds: opencode's mcp-auth.json, or mcp-remote's "
        "~/.mcp-auth. Each becomes a credential chctl keeps fresh, and the config entry gets our header and "
        '"oauth": false. The source files are only read.',
    )
    p.add_argument("source", choices=["opencode", "mcp-remote"], help="the tool whose logins to adopt")
    p.add_argument(
        "--from",
        dest="path",
        metavar="PATH",
        help="where the logins are (default: opencode's mcp-auth.json in $XDG_DATA_HOME, "
        "mcp-remote's $MCP_REMOTE_CONFIG_DIR or ~/.mcp-auth)",
    )
    add_target(p)
    p.add_argument("--dry-run", action="store_true", help="show what would be adopted; change nothing")
    add_json_flag(p)
    p.set_defaults(func=cmd_import)


def default_path(source: str) -> str:
    home = os.path.expanduser("~")
    if source == "opencode":
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
        return os.path.join(data, "opencode", "mcp-auth.json")
    return os.environ.get("MCP_REMOTE_CONFIG_DIR") or os.path.join(home, ".mcp-auth")


def cmd_import(args: argparse.Namespace) -> int:
    params = target(args)
    path = os.path.abspath(args.path or default_path(args.source))
    params.update(source=args.source, path=path, dry_run=args.dry_run)
    result = call("auth.import", params)
    if args.json:
        print_json(result)
        return 0
    servers: list[dict[str, Any]] = result["servers"]
    print(f"{'would import' if args.dry_run else 'imported'} into {result['path']} from {result['source']}")
    if not servers:
        print("  no logins found there")
        return 0
    now = time.time()
    rows = [["NAME", "OUTCOME", "EXPIRES", "DETAILS"]]
    for server in servers:
        outcome = server["outcome"]
        words = f"needs login → chctl auth {server['name']}" if outcome == "needs_reauth" else OUTCOMES[outcome]
        detail = server.get("reason") or server.get("server_url") or ""
        if outcome in ("adopted", "would_adopt") and not server["has_refresh_token"]:
            detail = "no refresh token: a new login is due when it expires"
        rows.append([server["name"], words, when(server["expires_at"], now), detail])
    print(table(rows))
    if args.dry_run:
        print("nothing was changed (--dry-run)")
    return 0
