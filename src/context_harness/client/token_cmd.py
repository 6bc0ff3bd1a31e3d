"""`chctl token NAME [--min-valid SECONDS] [--header | --json]`: the credential that is valid now, alone on stdout.

Agents run it at every connect (Claude Code's `headersHelper`), so its own spellings skip argparse (`parse_fast`)
and it loads nothing `chctl status` does not. On failure stdout stays empty: `error[CODE]` and a hint go to
stderr and chctl exits 1, so a caller never sends half an answer as a header.
"""

from __future__ import annotations

import os
import sys

from context_harness.client import wire
from context_harness.client.rpc_client import RpcError, call

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

DEFAULT_MIN_VALID_S = 60.0  # the daemon's default too (services/token_access.py)
MAX_MIN_VALID_S = 24 * 3600.0  # what the daemon accepts (rpc_params.TokenParams)
FORMS = ("--header", "--json")
# Claude Code tells its headersHelper which server URL is connecting: a swapped `.mcp.json` gets no token.
CLAUDE_SERVER_URL = "CLAUDE_CODE_MCP_SERVER_URL"


def parse_fast(args_list: Sequence[str]) -> dict[str, object] | None:
    """`token NAME` with `--min-valid N`, `--header` or `--json` in any order, as argparse would read them;
    None for anything else (then argparse parses it, and explains what is wrong)."""
    if len(args_list) < 2 or args_list[0] != "token" or args_list[1].startswith("-"):
        return None
    parsed: dict[str, object] = {"name": args_list[1], "min_valid": DEFAULT_MIN_VALID_S, "form": None}
    rest = list(args_list[2:])
    while rest:
        word = rest.pop(0)
        if word in FORMS:
            if parsed["form"] is not None:
                return None
            parsed["form"] = word.removeprefix("--")
            continue
        if word == "--min-valid" and rest:
            value = rest.pop(0)
        elif word.startswith("--min-valid="):
            value = word.partition("=")[2]
        else:
            return None
        try:
            parsed["min_valid"] = float(value)
        except ValueError:
            return None
    return parsed


def print_credential(name: str, min_valid: float, form: str | None) -> int:
    """Ask the daemon for `name`'s credential (refreshed first if it expires within `min_valid` seconds) and
    print it: the bare token or key, `Name: value` (`header`), or Claude Code's headers object (`json`)."""
    if not 0 <= min_valid <= MAX_MIN_VALID_S:  # also NaN
        raise RpcError("INVALID_PARAMS", f"--min-valid must be 0 to {MAX_MIN_VALID_S:.0f} seconds")
    params: dict[str, object] = {"name": name, "min_valid_s": min_valid}
    asking_url = os.environ.get(CLAUDE_SERVER_URL)
    if asking_url:  # Claude Code's headersHelper: the daemon hands out nothing for a URL it did not record
        params["for_url"] = asking_url
    found = call("token.get", params)
    if form == "json":
        text = wire.dumps({found["header_name"]: found["header_value"]})
    elif form == "header":
        text = f"{found['header_name']}: {found['header_value']}"
    else:
        text = found["token"]
    sys.stdout.write(text + "\n")
    if found.get("scopes_wanted"):  # valid, but not for every call: say so where a person reads it
        wanted = " ".join(found["scopes_wanted"])
        sys.stderr.write(f"note: {name} refused a call for lack of scope {wanted}\n  hint: run `chctl auth {name}`\n")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    return print_credential(args.name, args.min_valid, args.form)


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "token",
        help="print NAME's credential that is valid now (for scripts, curl, Claude Code's headersHelper)",
        description="Print NAME's current access token or API key, and nothing else, on stdout. A token "
        "that expires within --min-valid seconds is refreshed first. On failure stdout stays empty, "
        "the error goes to stderr and the exit status is 1.",
        epilog='examples:\n  curl -H "$(chctl token linear --header)" https://mcp.linear.app/mcp\n'
        '  chctl token linear --json      # {"Authorization":"Bearer ..."}: Claude Code\'s headersHelper',
    )
    p.add_argument("name", help="a server with a stored login or API key")
    p.add_argument(
        "--min-valid",
        type=float,
        default=DEFAULT_MIN_VALID_S,
        metavar="SECONDS",
        help="refresh first if the token expires sooner (default: 60; at most half of the token's lifetime)",
    )
    forms = p.add_mutually_exclusive_group()
    forms.add_argument(
        "--header", dest="form", action="store_const", const="header", help="print `Name: value` (curl -H)"
    )
    forms.add_argument(
        "--json", dest="form", action="store_const", const="json", help='print {"Name": "value"} (headersHelper)'
    )
    p.set_defaults(func=cmd_token, form=None)
