"""The commands that edit and read agent configs: `chctl init`, `registry`, `list`, `add`, `remove` and
`clients`. Standard library only; chctl imports this module when it builds its parser, so `chctl status`
never loads it.
"""

from __future__ import annotations

import os
import sys

from context_harness.client.arguments import add_json_flag, add_target
from context_harness.client.output import (
    home_as_tilde,
    print_hint,
    print_json,
    say_made_private,
    table,
    terminal_width,
)
from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms of start-up)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

# How `chctl clients` fits a narrow terminal: the server list is cut first, then FOUND leaves, then the path is cut.
CLIENTS_FIT = (("cut", 3), ("drop", 1), ("cut", 2))
MIN_DESCRIPTION = 30  # `chctl registry` on a terminal narrower than URLs plus this leaves the URLs out
NAME_HELP = (
    "a server from `chctl registry`, one from an MCP registry as NAMESPACE/NAME[@VERSION] (`chctl search`), "
    "or a name of your choice with --url or --command"
)
ADD_DESCRIPTION = (
    "Add a server to an agent's config (opencode's by default): one from `chctl registry` by name, or any with --url."
)
ADD_EXAMPLES = """\
examples:
  chctl add context7 --api-key-env CONTEXT7_API_KEY   # key from the environment (not visible in `ps`)
  chctl add linear --global                           # OAuth: then `chctl auth linear`
  chctl add docs --url https://mcp.example.com/mcp -k KEY --key-header X-Api-Key
  chctl add files --command "npx -y @modelcontextprotocol/server-filesystem ~/docs"
  chctl add linear --client claude-code --client codex  # other agents' configs (through `chctl bridge`)
  chctl add linear --client cursor --mode header      # the header in the file instead of the bridge
  chctl add io.github.acme/weather --api-key-env KEY  # from an MCP registry (`chctl search weather`)
  chctl add com.example/crm@1.2.0 --var tenant=acme   # a version, and its URL's {tenant}
  chctl add                                           # on a terminal: pick from the registry, or search

`chctl registry` lists the servers you can add by name.
"""


# What `chctl add` says after the path of an entry that holds no header.
MODE_NOTES = {"bridge": " (through `chctl bridge`)", "helper": " (Claude runs `chctl token` at each connect)"}


def add_config_parsers(sub: Any) -> None:
    import argparse

    from context_harness.client import search_cmd

    p = sub.add_parser("init", help="create an agent's config (opencode's: $schema and an empty mcp section)")
    add_target(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("registry", help="list the servers chctl knows how to add")
    add_json_flag(p)
    p.set_defaults(func=cmd_registry)
    search_cmd.add_search_parser(sub)  # and those the MCP registries know

    p = sub.add_parser("list", help="list the MCP servers in an opencode config")
    add_target(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "add",
        help="add a server to an agent's config (opencode's by default)",
        description=ADD_DESCRIPTION,
        epilog=ADD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)

    p = sub.add_parser("remove", help="remove a server from an agent's config")
    p.add_argument("name", help="the server's name in the config")
    add_target(p, many_clients=True)
    p.add_argument(
        "--forget",
        action="store_true",
        help="when no config carries it any more, forget its API key, or log out of it (revoking the tokens)",
    )
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("clients", help="the agent clients on this machine and the servers each carries")
    add_json_flag(p)
    p.set_defaults(func=cmd_clients)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    """`chctl add`'s arguments."""
    p.add_argument("name", nargs="?", help=NAME_HELP + "; on a terminal, leave it out to pick from a list")
    add_target(p, many_clients=True)
    p.add_argument("--url", help="remote server URL (for a server not in the registry, or to override it)")
    p.add_argument("--header", action="append", metavar="K=V", help="an extra static header (repeatable)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("-k", "--api-key", metavar="KEY", help="API key (visible in `ps`; prefer --api-key-env)")
    keys.add_argument("--api-key-env", metavar="VAR", help="read the API key from this environment variable")
    p.add_argument(
        "--key-header",
        metavar="NAME",
        help="header that carries the key for a custom --url (default: Authorization: Bearer)",
    )
    p.add_argument("--command", metavar='"CMD ARGS..."', help="a local (stdio) server's command line")
    p.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="a registry server's name here (default: weather for io.github.acme/weather)",
    )
    p.add_argument(
        "--var",
        action="append",
        metavar="K=V",
        help="a registry server's URL variable (repeatable; asked on a terminal)",
    )
    p.add_argument(
        "--header-env",
        action="append",
        metavar="HEADER=VAR",
        help="a registry server's secret header, read from the environment variable VAR (repeatable)",
    )
    p.add_argument("--env", action="append", metavar="K=V", help="environment for a local server (repeatable)")
    p.add_argument(
        "--secret-mode",
        choices=["inline", "file"],
        help="inline (the default): the header holds the secret; file: a {file:} reference to a 0600 file",
    )
    p.add_argument(
        "--bridge",
        action="store_true",
        help="run `chctl bridge NAME` from the config instead of writing a header: a running session always "
        "uses the current token, and no secret is in the file",
    )
    p.add_argument(
        "--mode",
        choices=["bridge", "header", "helper"],
        help="bridge or header, for every --client (default: header for opencode, bridge for the others); "
        "helper, for claude-code only: Claude runs `chctl token NAME --json` at each connect",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_add, usage_error=p.error)


# --- argument helpers -----------------------------------------------------------------------------------


def key_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RpcError("INVALID_PARAMS", f"{flag} expects K=V, got {item!r}", f"e.g. {flag} NAME=value")
        result[key] = value
    return result


# --- commands -------------------------------------------------------------------------------------------


def printed_as_json(args: argparse.Namespace, result: Any) -> bool:
    """With --json the answer is printed as it came, and nothing else."""
    if args.json:
        print_json(result)
    return bool(args.json)


def cmd_init(args: argparse.Namespace) -> int:
    from context_harness.client.arguments import target

    result = call("config.init", target(args))
    print(f"created {result['path']}" if result["created"] else f"{result['path']} already exists; left as it is")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    result = call("registry.list")
    if printed_as_json(args, result):
        return 0
    rows = [["NAME", "AUTH", "URL", "DESCRIPTION"]]
    for server in result["servers"]:
        auth = server.get("auth_type", "none")
        if server.get("needs_preregistered_client"):
            auth += " (client id)"
        rows.append(
            [
                server["name"],
                auth,
                server.get("url") or " ".join(server.get("command") or []),
                server.get("description", ""),
            ]
        )
    width = terminal_width()
    if width is not None and sum(max(len(row[i]) for row in rows) + 2 for i in range(3)) + MIN_DESCRIPTION > width:
        rows = [[row[0], row[1], row[3]] for row in rows]  # too narrow for URLs: `--json` has them
    print(table(rows, width=width, cut=len(rows[0]) - 1))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from context_harness.client.arguments import target

    result = call("mcp.list", target(args))
    if printed_as_json(args, result):
        return 0
    print(result["path"])
    if not result["servers"]:
        print("  (no MCP servers configured; see `chctl registry` and `chctl add NAME`)")
        return 0
    rows = [["NAME", "TYPE", "TARGET", "MANAGED"]]
    for name in result["servers"]:
        summary = result.get("summaries", {}).get(name) or {"kind": "?", "target": ""}
        rows.append([name, summary["kind"], summary["target"], "yes" if name in result["managed"] else ""])
    print(table(rows))
    return 0


def read_api_key(args: argparse.Namespace) -> str | None:
    if args.api_key is not None:
        return str(args.api_key)
    if args.api_key_env:
        value = os.environ.get(args.api_key_env)
        if not value:
            raise RpcError(
                "AUTH_REQUIRED",
                f"environment variable {args.api_key_env} is not set or empty",
                f"export {args.api_key_env}=... first, or `chctl add {args.name} -k KEY`",
            )
        return value
    return None


def cmd_add(args: argparse.Namespace) -> int:
    picked = args.name is None  # `chctl add` alone: pick from the registry, on a terminal only
    if picked:
        from context_harness.client import picker

        if not picker.interactive():
            args.usage_error("NAME is required (on a terminal, `chctl add` alone lets you pick from the registry)")
        args.name = picker.pick_server()
        if args.name is None:
            print("nothing added")
            return 1
    params = _add_params(args)
    key = read_api_key(args)
    if key is not None:
        params["api_key"] = key
    result = _add_asking_for_a_key(args, params, key)
    if printed_as_json(args, result):
        return 0
    from context_harness.client.registry_add import print_registry_outcome

    _print_added(result)
    say_made_private(result.get("made_private") or {})
    print_registry_outcome(result)
    name = result["name"]
    if result["needs_auth"]:
        if picked and picker.ask_yes(f"log in to {name} now?"):
            return _log_in(name)
        print(f"next: run `chctl auth {name}` to log in; the token is written here automatically")
    elif result.get("needs_key"):
        print(f"next: {name} answers 401 and offers no OAuth login: give it its key, `chctl add {name} -k KEY`")
    return 0


def _add_params(args: argparse.Namespace) -> dict[str, Any]:
    """mcp.add's parameters from `chctl add`'s flags (a registry server's: see registry_add); what no flag names
    stays as recorded for the server (clients, mode, key header, URL)."""
    import shlex

    from context_harness.client import registry_add
    from context_harness.client.arguments import clients_of, target

    params = target(args)
    params["name"] = args.name
    if args.secret_mode:
        params["secret_mode"] = args.secret_mode
    if args.clients:
        params["clients"] = clients_of(args)
    if args.bridge:
        params["bridge"] = True
    if args.mode:
        params["mode"] = args.mode
    if args.url:
        params["url"] = args.url
    if args.header:
        params["headers"] = key_values(args.header, "--header")
    if args.command:
        params["command"] = shlex.split(args.command)
    if args.env:
        params["environment"] = key_values(args.env, "--env")
    if args.key_header:
        params["key_header"] = args.key_header
    if registry_add.is_registry_name(args.name):
        registry_add.registry_params(args, params, key_values(args.var, "--var"))
    elif args.as_name or args.var or args.header_env:
        raise RpcError(
            "INVALID_PARAMS",
            "--as, --var and --header-env are for a server from a registry (NAMESPACE/NAME)",
            "`chctl search TEXT` finds one",
        )
    return params


def _add_asking_for_a_key(args: argparse.Namespace, params: dict[str, Any], key: str | None) -> Any:
    """mcp.add; on a terminal, a server that needs a key not given is asked for it (hidden) and added again."""
    import getpass

    try:
        return call("mcp.add", params)
    except RpcError as exc:
        if exc.code != "AUTH_REQUIRED" or key is not None or not sys.stdin.isatty():
            raise
        params["api_key"] = getpass.getpass(f"API key for {args.name} (hidden): ").strip()
        if not params["api_key"]:
            raise
        return call("mcp.add", params)


def _print_added(result: dict[str, Any]) -> None:
    """Each config the server is now in, what the add changed of what was recorded (one line each), and the
    configs whose header is not written yet."""
    from context_harness.client.registry_add import origin

    configs = result.get("configs") or [{"path": result["path"], "mode": "header", "new": True}]
    for config in configs:
        through = MODE_NOTES.get(config["mode"], "")
        verb = "added {} to" if config.get("new", True) else "updated {} in"
        print(f"{verb.format(result['name'] + origin(result))} {printable(config['path'])}{through}")
    for change in result.get("changes") or []:
        print(f"  {printable(change)}")
    if not result.get("changes") and not any(c.get("new", True) for c in configs):
        print("  nothing changed")
    for path, reason in (result.get("not_written") or {}).items():
        print(f"  header NOT written to {printable(path)}: {printable(reason)}", file=sys.stderr)
    if result.get("not_written"):
        print_hint("the daemon writes it at its next check; `chctl status` shows whether it did", file=sys.stderr)


def cmd_remove(args: argparse.Namespace) -> int:
    from context_harness.client.arguments import clients_of, target

    params = target(args)
    params["name"] = args.name
    clients = clients_of(args)
    for index, client in enumerate(clients):
        forget = args.forget and index == len(clients) - 1  # once the last entry is gone
        result = call("mcp.remove", {**params, "client": client, "forget": forget})
        print(f"removed {args.name}" + (f" from {result['path']}" if result.get("path") else ""))
    print(what_stays(args.name, result))
    return 0


def what_stays(name: str, result: dict[str, Any]) -> str:
    """After `chctl remove`: what the daemon still holds for `name`, and how to let it go."""
    left = result.get("configs_left") or 0
    stored = {"key": "its API key", "login": "its login"}.get(result.get("stored") or "")
    if result.get("forgotten"):
        return f"forgot {name}'s " + ("API key" if result["forgotten"] == "key" else "login (logged out)")
    if left:
        others = "another config" if left == 1 else f"{left} other configs"
        return f"{name} is still in {others} (`chctl status` lists them)" + (f"; {stored} stays" if stored else "")
    if stored:
        return (
            f"{stored} stays stored, so `chctl status` still lists {name}; "
            f"`chctl remove {name} --forget` forgets it (or `chctl add {name}` uses it again)"
        )
    return f"nothing more is kept for {name}"


def cmd_clients(args: argparse.Namespace) -> int:
    result = call("clients.list")
    if printed_as_json(args, result):
        return 0
    rows = [["CLIENT", "FOUND", "USER CONFIG", "SERVERS"]]
    for row in result["clients"]:
        servers = [name + f" ({carried(info)})" for name, info in row["servers"].items()]
        found = "yes" if row["found"] else "no"
        rows.append([row["client"], found, home_as_tilde(row["user_config"]), ", ".join(servers) or "-"])
    print(table(rows, width=terminal_width(), fit=CLIENTS_FIT))
    for row in result["clients"]:
        if row.get("user_config_error"):
            print(f"warning: {row['user_config_error']}", file=sys.stderr)
    return 0


def carried(info: dict[str, Any]) -> str:
    """How a client carries a server, for `chctl clients`: its mode, and where when not in the user config."""
    mode = info["mode"] if info["managed"] else "not managed"
    projects = len(info["paths"]) - (1 if info.get("in_user_config") else 0)
    if not projects:
        return mode
    some = "a project" if projects == 1 else f"{projects} projects"
    return f"{mode}, and in {some}" if info.get("in_user_config") else f"{mode}, in {some}"


def _log_in(name: str) -> int:
    """`chctl auth NAME`, as if typed, after `chctl add` picked NAME on a terminal."""
    import argparse

    from context_harness.client.auth_cmd import add_auth_parsers, auth_login

    parser = argparse.ArgumentParser(prog="chctl")
    add_auth_parsers(parser.add_subparsers(dest="command"))
    return auth_login(parser.parse_args(["auth", name]))
