"""`chctl idp add|login|list`: the company identity provider whose one sign-in serves every MCP server that trusts
it (enterprise-managed authorization). Standard library only; chctl imports this module when it builds its parser.
"""

from __future__ import annotations

import sys
import time

from context_harness.client.arguments import add_json_flag
from context_harness.client.output import print_json, secret_words, table, terminal_width, when
from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

# How the identity providers' table fits a narrow terminal: the servers are cut, then the issuer, the next
# refresh and where the sign-in rests leave (`--json` has them), then the state's words are cut.
IDP_FIT = (("cut", 6), ("drop", 2), ("drop", 4), ("drop", 5), ("cut", 1))
# An ID token is a JWT of a few KiB: more on stdin is not one.
MAX_ID_TOKEN_BYTES = 64 * 1024


def add_idp_parsers(sub: Any) -> None:
    p = sub.add_parser("idp", help="your company's identity provider: one sign-in for every server that trusts it")
    actions = p.add_subparsers(dest="idp_action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="add an identity provider (once)")
    a.add_argument("name", help="a name of your choice for it, e.g. okta")
    a.add_argument("--issuer", required=True, metavar="URL", help="its OpenID Connect issuer URL")
    a.add_argument("--client-id", required=True, metavar="ID", help="the client registered there for you")
    a.add_argument(
        "--client-secret", metavar="-", help="`-` asks for its secret without echo (or set $IDP_CLIENT_SECRET)"
    )
    a.add_argument("--scope", action="append", metavar="S", help="a scope to ask for besides openid (repeatable)")
    add_json_flag(a)
    a.set_defaults(func=cmd_idp_add)
    login = actions.add_parser("login", help="sign in (in the browser, or with an ID token on stdin)")
    login.add_argument("name", help="the identity provider (from `chctl idp add`)")
    login.add_argument("--id-token", metavar="-", help="`-` reads an ID token from your SSO tool on stdin")
    login.add_argument("--port", type=int, default=0, help="fixed callback port (exact redirect matching, ssh -L)")
    login.add_argument("--no-browser", action="store_true", help="print the URL; accept the pasted redirect URL")
    login.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="how long to wait (300)")
    add_json_flag(login)
    login.set_defaults(func=cmd_idp_login)
    listed = actions.add_parser("list", help="the identity providers, their sign-in and the servers that use each")
    add_json_flag(listed)
    listed.set_defaults(func=cmd_idp_list)


def cmd_idp_add(args: argparse.Namespace) -> int:
    from context_harness.client.auth_cmd import client_secret, env_prefix

    params: dict[str, Any] = {"name": args.name, "issuer": args.issuer, "client_id": args.client_id}
    secret = client_secret(args.client_secret, env_prefix(args.name))
    if secret:
        params["client_secret"] = secret
    if args.scope:
        params["scopes"] = args.scope
    row = call("idp.add", params)
    if args.json:
        print_json(row)
        return 0
    print(f"added the identity provider {args.name} ({printable(row['issuer'])})")
    if row["state"] != "active":
        print(f"next: `chctl idp login {args.name}`, then `chctl add NAME --url URL --idp {args.name} --client-id ID`")
    return 0


def cmd_idp_login(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"name": args.name, "port": args.port, "timeout_s": args.timeout}
    if args.id_token is not None:
        if args.id_token != "-":
            raise RpcError(
                "INVALID_PARAMS", "--id-token takes `-` (the token on stdin)", "pipe it: … | chctl idp login"
            )
        params["id_token"] = sys.stdin.read(MAX_ID_TOKEN_BYTES).strip()
    started = call("idp.login", params)
    row = started.get("result")
    if row is None:
        from context_harness.client.auth_cmd import open_browser, wait_for_login

        deadline = time.monotonic() + args.timeout
        print(printable(started["authorization_url"]), flush=True)
        opened = False if args.no_browser else open_browser(started["authorization_url"])
        what = "the browser" if opened else "the sign-in"
        row = wait_for_login(started["flow_id"], deadline, what=what, live=opened and sys.stderr.isatty())
    if args.json:
        print_json(row)
        return 0
    print(f"signed in to {args.name}" + (f" as {printable(row['subject'])}" if row.get("subject") else ""))
    for name in row["servers"]:
        print(f"  {name} gets its token from this sign-in")
    return 0


def cmd_idp_list(args: argparse.Namespace) -> int:
    rows = call("idp.list")["idps"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no identity providers: `chctl idp add NAME --issuer URL --client-id ID` adds one")
        return 0
    print(table(idp_table(rows, time.time()), width=terminal_width(), fit=IDP_FIT))
    return 0


def idp_table(rows: list[dict[str, Any]], now: float) -> list[list[str]]:
    """NAME, STATE (with the fix), ISSUER, EXPIRES, NEXT REFRESH, SECRET AT, SERVERS: for `idp list` and
    `status`."""
    table_rows = [["IDP", "STATE", "ISSUER", "EXPIRES", "NEXT REFRESH", "SECRET AT", "SERVERS"]]
    for row in rows:
        state = row["state"]
        if state == "secret_unreadable":  # in the keychain, which did not give it (locked, cleared)
            state = f"secret unreadable: {row.get('last_error') or 'keychain'}"
        elif row.get("fix"):
            state = f"needs sign-in → {row['fix']}"
        elif state == "retrying":
            state = f"retrying: {row.get('last_error') or ''}"
        elif state == "active":
            state = "ok" + (f" ({printable(row['subject'])})" if row.get("subject") else "")
        issuer = printable(row.get("issuer") or "-")
        servers = ", ".join(row["servers"]) or "-"
        expires, refresh = when(row["expires_at"], now), when(row["next_refresh_at"], now)
        table_rows.append(
            [row["name"], state, issuer, expires, refresh, secret_words(row.get("secret_at") or []), servers]
        )
    return table_rows
