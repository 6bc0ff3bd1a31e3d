"""chctl: the context-harness command line. Talks to context-harnessd over its Unix socket.

Standard library only, so it starts about as fast as `python3`: it speaks JSON through `wire` and the socket
through `_socket` (see rpc_client.py); what only some commands need (getpass, shlex, json for --json, the
modules behind `auth`, `bridge`, `token` and `service`) is imported by them; and `chctl status`, `chctl bridge
NAME` and `chctl token NAME` skip argparse (see `parse_fast`).
"""

from __future__ import annotations

import os
import sys
import time

from context_harness import __version__
from context_harness.client import rpc_client, states
from context_harness.client.output import (
    paint,
    print_error,
    print_hint,
    print_json,
    table,
    terminal_width,
    use_colour,
    when,
)
from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms of start-up)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any


MIN_DESCRIPTION = 30  # `chctl registry` on a terminal narrower than URLs plus this leaves the URLs out
NAME_HELP = "a server from `chctl registry`, or a name of your choice with --url or --command"
EXAMPLES = """\
examples:
  chctl init                                        # opencode.json with an empty "mcp" here
  chctl add context7 --api-key-env CONTEXT7_API_KEY # an API-key server
  chctl add linear && chctl auth linear             # an OAuth server: add, then log in once
  chctl status                                      # every server's state at a glance

`chctl registry` lists the servers chctl knows; `chctl COMMAND --help` tells more about one command.
"""
ADD_EXAMPLES = """\
examples:
  chctl add context7 --api-key-env CONTEXT7_API_KEY   # key from the environment (not visible in `ps`)
  chctl add linear --global                           # OAuth: then `chctl auth linear`
  chctl add docs --url https://mcp.example.com/mcp -k KEY --key-header X-Api-Key
  chctl add files --command "npx -y @modelcontextprotocol/server-filesystem ~/docs"
  chctl add linear --client claude-code --client codex  # other agents' configs (through `chctl bridge`)
  chctl add linear --client cursor --mode header      # the header in the file instead of the bridge
  chctl add                                           # on a terminal: pick from the registry

`chctl registry` lists the servers you can add by name.
"""


# What `chctl add` says after the path of an entry that holds no header.
MODE_NOTES = {"bridge": " (through `chctl bridge`)", "helper": " (Claude runs `chctl token` at each connect)"}

# `chctl doctor` exits with the worst level it found (documented in README).
DOCTOR_EXIT = {"ok": 0, "warn": 1, "error": 2}


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


def cmd_init(args: argparse.Namespace) -> int:
    from context_harness.client.arguments import target

    result = call("config.init", target(args))
    print(f"created {result['path']}" if result["created"] else f"{result['path']} already exists; left as it is")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    result = call("registry.list")
    if args.json:
        print_json(result)
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
    if args.json:
        print_json(result)
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
                f"export {args.api_key_env}=... first, or pass -k KEY",
            )
        return value
    return None


def cmd_add(args: argparse.Namespace) -> int:
    import getpass
    import shlex

    from context_harness.client.arguments import clients_of, target

    picked = args.name is None  # `chctl add` alone: pick from the registry, on a terminal only
    if picked:
        from context_harness.client import picker

        if not picker.interactive():
            args.usage_error("NAME is required (on a terminal, `chctl add` alone lets you pick from the registry)")
        args.name = picker.pick_server()
        if args.name is None:
            print("nothing added")
            return 1
    params = target(args)
    params.update(name=args.name, secret_mode=args.secret_mode)
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
    key = read_api_key(args)
    if key is not None:
        params["api_key"] = key
    try:
        result = call("mcp.add", params)
    except RpcError as exc:
        if exc.code != "AUTH_REQUIRED" or key is not None or not sys.stdin.isatty():
            raise
        params["api_key"] = getpass.getpass(f"API key for {args.name} (hidden): ").strip()
        if not params["api_key"]:
            raise
        result = call("mcp.add", params)
    if args.json:
        print_json(result)
        return 0
    for config in result.get("configs") or [{"path": result["path"], "mode": "bridge" if args.bridge else "header"}]:
        through = MODE_NOTES.get(config["mode"], "")
        print(f"added {result['name']} to {config['path']}{through}")
    if result["needs_auth"]:
        if picked and picker.ask_yes(f"log in to {result['name']} now?"):
            from context_harness.client.auth_cmd import auth_login

            return auth_login(build_parser().parse_args(["auth", result["name"]]))
        print(f"next: run `chctl auth {result['name']}` to log in; the token is written here automatically")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from context_harness.client.arguments import clients_of, target

    params = target(args)
    params["name"] = args.name
    for client in clients_of(args):
        result = call("mcp.remove", {**params, "client": client})
        print(f"removed {args.name}" + (f" from {result['path']}" if result.get("path") else ""))
    return 0


def cmd_clients(args: argparse.Namespace) -> int:
    result = call("clients.list")
    if args.json:
        print_json(result)
        return 0
    rows = [["CLIENT", "FOUND", "USER CONFIG", "SERVERS"]]
    for row in result["clients"]:
        servers = [
            name + (f" ({info['mode']})" if info["managed"] else " (not managed)")
            for name, info in row["servers"].items()
        ]
        rows.append([row["client"], "yes" if row["found"] else "no", row["user_config"], ", ".join(servers) or "-"])
    print(table(rows))
    for row in result["clients"]:
        if row.get("user_config_error"):
            print(f"warning: {row['user_config_error']}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    result = call("status")
    if args.json:
        print_json(result)
        return 0
    daemon = result["daemon"]
    print(
        f"daemon: pid {daemon['pid']}, up {daemon['uptime_s']:.0f}s, version {daemon['version']}, "
        f"socket {daemon['socket']}"
    )
    servers = result["servers"]
    if not servers:
        print("no servers yet: `chctl registry` lists known ones, `chctl add NAME` adds one")
        return 0
    now = time.time()
    rows = [["NAME", "STATE", "AUTH", "EXPIRES", "NEXT REFRESH", "MODE", "CONFIGS", "BRIDGES", "LAST ERROR / NOTE"]]
    colours: list[str | None] = []
    for s in servers:
        words, colour = states.describe(s, now)
        colours.append(colour)
        rows.append(
            [
                s["name"] + (" (shared)" if s.get("shared") else ""),
                words,
                s["auth_type"],
                when(s["expires_at"], now),
                when(s["next_refresh_at"], now),
                s.get("mode") or "-",
                str(len(s["configs"])),
                str(len(s.get("bridges") or [])),
                "" if s["state"] == "retrying" else s["last_error"] or s.get("note") or "",  # retrying: in STATE
            ]
        )
    print(table(rows, colours if use_colour() else None, colour_column=1, width=terminal_width(), cut=8))
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from context_harness.client import bridge

    return bridge.run(args.name)


def cmd_service(args: argparse.Namespace) -> int:
    from context_harness.client.service import run_service  # only `chctl service` needs it

    return run_service(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from context_harness.client.service_env import shell_network  # only doctor needs it

    try:
        result = call("doctor", {"cwd": os.getcwd(), "shell_network": shell_network(os.environ)})
    except RpcError as exc:
        print(f"✗ daemon reachable: {printable(exc.message)}")
        if exc.hint:
            print_hint(exc.hint, file=sys.stdout)
        return DOCTOR_EXIT["error"]
    checks = [
        {"name": "daemon", "level": "ok", "message": f"daemon reachable on {rpc_client.socket_path()}", "hint": None},
        *result["checks"],
    ]
    if args.json:
        print_json(checks)
    else:
        marks = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "error": ("✗", "red")}
        colour = use_colour()
        for check in checks:
            mark, name = marks[check["level"]]
            print(f"{paint(mark, name) if colour else mark} {printable(check['message'])}")
            if check["level"] != "ok" and check.get("hint"):
                print_hint(check["hint"], file=sys.stdout)
    return max(DOCTOR_EXIT[c["level"]] for c in checks)


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.action == "run":
        argv, env = rpc_client.daemon_command()
        os.chdir(rpc_client.DAEMON_CWD)
        os.execve(argv[0], argv, env)  # noqa: S606 (argv, no shell)
    if args.action == "status":
        status = call("daemon.status", autostart=False)
        if args.json:
            print_json(status)
        else:
            print(
                f"running: pid {status['pid']}, up {status['uptime_s']:.0f}s, socket {status['socket']}, "
                f"home {status['home']}"
            )
        return 0
    if args.action == "start":
        status = call("daemon.status", autostart=True)
        print(f"running: pid {status['pid']}, socket {status['socket']}")
        return 0
    # stop
    try:
        status = call("daemon.status", autostart=False)
    except RpcError:
        print("not running")
        return 0
    call("daemon.shutdown", autostart=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            print("stopped")
            return 0
        except PermissionError:
            break
        time.sleep(0.05)
    return print_error("TIMEOUT", "the daemon did not stop within 10 s", f"kill {status['pid']}")


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from context_harness.client.arguments import add_json_flag, add_target

    parser = argparse.ArgumentParser(
        prog="chctl",
        description="Keep MCP server credentials valid and written into opencode's config.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create an agent's config (opencode's: $schema and an empty mcp section)")
    add_target(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("registry", help="list the servers chctl knows how to add")
    add_json_flag(p)
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("list", help="list the MCP servers in an opencode config")
    add_target(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "add",
        help="add a server to an agent's config (opencode's by default)",
        description="Add a server to an agent's config (opencode's by default): one from `chctl registry` by "
        "name, or any with --url.",
        epilog=ADD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--env", action="append", metavar="K=V", help="environment for a local server (repeatable)")
    p.add_argument(
        "--secret-mode",
        choices=["inline", "file"],
        default="inline",
        help="inline: the header holds the secret; file: a {file:} reference to a 0600 file",
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

    p = sub.add_parser("remove", help="remove a server from an agent's config")
    p.add_argument("name", help="the server's name in the config")
    add_target(p, many_clients=True)
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("clients", help="the agent clients on this machine and the servers each carries")
    add_json_flag(p)
    p.set_defaults(func=cmd_clients)

    p = sub.add_parser(
        "bridge",
        help="relay an MCP session on stdio through the daemon (what a --bridge entry runs)",
        description="Speak MCP on stdin/stdout; the daemon carries the traffic to NAME's server with the "
        "current credential. Agents start this; it exits when stdin closes.",
    )
    p.add_argument("name", help="the server to relay to (added with `chctl add NAME --bridge`)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("status", help="every server's credential state, expiry and next refresh")
    add_json_flag(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "doctor",
        help="check the daemon, permissions, configs and every server's login",
        description="Check the daemon, permissions, configs and every server's login. "
        "Exit status: 0 when all is well, 1 on warnings, 2 on errors.",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("daemon", help="run, start, stop or query the daemon")
    p.add_argument(
        "action",
        choices=["run", "start", "stop", "status"],
        help="run: in this terminal; start: in the background; stop; status: pid, uptime, socket",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_daemon)

    # The commands that live in modules of their own; imported here, so `chctl status` does not load them.
    from context_harness.client import (
        auth_cmd,
        check_cmd,
        completion,
        import_cmd,
        logs,
        remote_cmd,
        service_args,
        token_cmd,
    )

    auth_cmd.add_auth_parsers(sub)
    check_cmd.add_check_parser(sub)
    token_cmd.add_token_parser(sub)
    import_cmd.add_import_parser(sub)
    logs.add_logs_parser(sub)
    remote_cmd.add_remote_parsers(sub)
    completion.add_completion_parser(sub, parser)
    service_args.add_service_arguments(sub, cmd_service)
    return parser


# `chctl status` is what people and status bars run most often. Building the argparse parser for every
# command costs more than the rest of chctl's start-up together, so these exact spellings skip it; any
# other spelling (`--help`, a typo, options in another order) goes through argparse as usual.
FAST_SPELLINGS = {("status",): False, ("status", "--json"): True}


class FastArgs:
    """What `parse_fast` makes: the attributes argparse would set (`types.SimpleNamespace` costs a module import)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __getattr__(self, name: str) -> Any:  # only for the type checker: every attribute is set in __init__
        raise AttributeError(name)


def parse_fast(args_list: Sequence[str]) -> FastArgs | None:
    """What argparse would make of `args_list` for `bridge NAME`, `token NAME ...` and the spellings in
    FAST_SPELLINGS; else None."""
    if len(args_list) == 2 and args_list[0] == "bridge" and not args_list[1].startswith("-"):
        return FastArgs(command="bridge", name=args_list[1], func=cmd_bridge)  # agents spawn it per session
    if args_list[:1] == ["token"]:  # agents run it at every connect
        from context_harness.client import token_cmd

        token = token_cmd.parse_fast(args_list)
        return None if token is None else FastArgs(command="token", func=token_cmd.cmd_token, **token)
    as_json = FAST_SPELLINGS.get(tuple(args_list))
    if as_json is None:
        return None
    return FastArgs(command="status", json=as_json, func=cmd_status)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["mcp"]:  # the seed's spelling: `context-harness mcp add|list|remove|auth ...`
        args_list = args_list[1:]
    if not args_list:  # `chctl` alone: the help, not argparse's "the following arguments are required"
        build_parser().print_help()
        return 0
    args = parse_fast(args_list) or build_parser().parse_args(args_list)
    try:
        return int(args.func(args))
    except RpcError as exc:
        return print_error(exc.code, exc.message, exc.hint)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
