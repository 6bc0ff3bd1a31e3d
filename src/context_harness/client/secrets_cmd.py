"""`chctl secrets migrate --to keyring|file`: move every stored secret into the OS keychain or into the token and
client registration files. The daemon writes each new copy and reads it back before it removes the old one."""

from __future__ import annotations

import sys

from context_harness.client.arguments import add_json_flag
from context_harness.client.output import print_error, print_json, table
from context_harness.client.rpc_client import call

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

OUTCOMES = {"moved": "moved", "already": "already there", "failed": "not moved"}
WHERE = {"keyring": "the keychain", "file": "the token and client files"}


def add_secrets_parser(sub: Any) -> None:
    p = sub.add_parser(
        "secrets",
        help="move stored secrets into the OS keychain or into the token and client files",
        description="Move every stored secret (API keys, access and refresh tokens, client secrets and private "
        "keys, identity provider sign-ins) into the OS keychain or into the 0600 token, client registration and "
        "identity provider files. Each new copy is written and read back "
        "before the old one is removed. Where new secrets go is CH_SECRET_STORE's to say (auto, keyring, file).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    migrate = actions.add_parser("migrate", help="move every stored secret to --to")
    migrate.add_argument("--to", required=True, choices=["keyring", "file"], help="where the secrets go")
    add_json_flag(migrate)
    migrate.set_defaults(func=cmd_secrets_migrate)


def cmd_secrets_migrate(args: argparse.Namespace) -> int:
    result = call("secrets.migrate", {"to": args.to})
    servers: list[dict[str, Any]] = result["servers"]
    failed = [s for s in servers if s["outcome"] == "failed"]
    if args.json:
        print_json(result)
        return 1 if failed else 0
    if not servers:
        print("no secrets stored")
    else:
        rows = [["NAME", "OUTCOME", "DETAILS"]]
        rows += [[s["name"], OUTCOMES.get(s["outcome"], s["outcome"]), s["error"] or ""] for s in servers]
        print(table(rows))
    setting = result["setting"]
    if (args.to, setting) in (("keyring", "file"), ("file", "keyring"), ("file", "auto")):
        print(
            f"note: CH_SECRET_STORE={setting}: secrets stored from now on (a refresh, a login) go to "
            f"{WHERE['file' if setting == 'file' else 'keyring']}; set CH_SECRET_STORE={args.to} "
            "(environment or ~/.context-harness/daemon.env) to keep them in " + WHERE[args.to]
        )
    if failed:
        return print_error(
            "KEYCHAIN_UNAVAILABLE",
            f"{len(failed)} of {len(servers)} secrets were not moved (each still rests where it was)",
            "unlock the keychain (or start its service), then run `chctl secrets migrate` again",
            file=sys.stderr,
        )
    return 0
