"""chctl: the context-harness command line. Talks to context-harnessd over its Unix socket.

Standard library only, so it starts about as fast as `python3`: it speaks JSON through `wire` and the socket
through `_socket` (see rpc_client.py); what only some commands need (getpass, shlex, json for --json, the
modules behind `auth`, `bridge`, `token` and `service`) is imported by them; and `chctl status`, `chctl bridge
NAME`, `chctl token NAME` and `chctl search TEXT` skip argparse (see `parse_fast`).
"""

from __future__ import annotations

import os
import sys
import time

from context_harness import __version__
from context_harness.client import rpc_client, states
from context_harness.client.output import (
    home_as_tilde,
    paint,
    print_error,
    print_hint,
    print_json,
    secret_words,
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


EXAMPLES = """\
examples:
  chctl init                                        # opencode.json with an empty "mcp" here
  chctl add context7 --api-key-env CONTEXT7_API_KEY # an API-key server
  chctl add linear && chctl auth linear             # an OAuth server: add, then log in once
  chctl search weather                              # servers in the MCP Registry (add one by its name)
  chctl status                                      # every server's state at a glance

`chctl registry` lists the servers chctl knows; `chctl COMMAND --help` tells more about one command.
"""


# How `chctl status` fits a narrow terminal (docs/guide.md, "At a glance"): the note is cut first, then the counts, the
# auth type and the next refresh leave (`--json` has them all), then the state's words are cut, then the rest.
STATUS_FIT = (
    ("cut", 9),  # LAST ERROR / NOTE
    ("drop", 7),  # CONFIGS
    ("drop", 8),  # BRIDGES
    ("drop", 2),  # AUTH
    ("drop", 4),  # NEXT REFRESH
    ("cut", 1),  # STATE
    ("drop", 5),  # MODE
    ("drop", 6),  # SECRET AT (`chctl doctor` says it in words)
    ("drop", 9),
)

# `chctl doctor` exits with the worst level it found (documented in docs/guide.md).
DOCTOR_EXIT = {"ok": 0, "warn": 1, "error": 2}


# --- commands -------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    result = call("status")
    if args.json:
        print_json(result)
        return 0
    daemon, width = result["daemon"], terminal_width()
    line = f"daemon: pid {daemon['pid']}, up {daemon['uptime_s']:.0f}s, version {daemon['version']}"
    socket = f", socket {home_as_tilde(daemon['socket'])}"
    print(line + ("" if width is not None and len(line + socket) > width else socket))  # `chctl daemon status` has it
    store = daemon.get("secret_store") or {}
    if store.get("warning"):
        warning = f"secrets (CH_SECRET_STORE={store['setting']}): {store['warning']}; see `chctl doctor`"
        print(f"warning: {printable(warning)}", file=sys.stderr)
    servers = result["servers"]
    if not servers:
        print("no servers yet: `chctl registry` lists known ones, `chctl add NAME` adds one")
        return 0
    now = time.time()
    rows = [
        [
            "NAME",
            "STATE",
            "AUTH",
            "EXPIRES",
            "NEXT REFRESH",
            "MODE",
            "SECRET AT",
            "CONFIGS",
            "BRIDGES",
            "LAST ERROR / NOTE",
        ]
    ]
    colours: list[str | None] = []
    for s in servers:
        words, colour = states.describe(s, now)
        colours.append(colour)
        rows.append(
            [
                s["name"] + (" (shared)" if s.get("shared") else ""),
                words,
                _auth(s),
                when(s["expires_at"], now),
                when(s["next_refresh_at"], now),
                s.get("mode") or "-",
                secret_words(s.get("secret_at") or []),
                str(len(s["configs"])),
                str(len(s.get("bridges") or [])),
                "" if s["state"] == "retrying" else s["last_error"] or s.get("note") or "",  # retrying: in STATE
            ]
        )
    print(table(rows, colours if use_colour() else None, colour_column=1, width=width, fit=STATUS_FIT))
    if result.get("idps"):
        from context_harness.client.idp_cmd import IDP_FIT, idp_table

        print()
        print(table(idp_table(result["idps"], now), width=width, fit=IDP_FIT))
    return 0


def _auth(server: dict[str, Any]) -> str:
    """The AUTH column: the kind of credential, and of login for OAuth (the IdP a token is derived from)."""
    login = server.get("login")
    if login == "client_credentials":
        return "client credentials"
    if login == "idp":
        return f"idp {server.get('idp')}"
    return str(server["auth_type"])


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


def _add_own_parsers(sub: Any) -> None:
    """The commands whose handlers are in this module: bridge, status, doctor, daemon."""
    from context_harness.client.arguments import add_json_flag

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
    actions = "run: in this terminal; start: in the background; stop; status: pid, uptime, socket"
    p.add_argument("action", choices=["run", "start", "stop", "status"], help=actions)
    add_json_flag(p)
    p.set_defaults(func=cmd_daemon)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    # The commands that live in modules of their own; imported here, so `chctl status` does not load them.
    from context_harness.client import (
        auth_cmd,
        check_cmd,
        completion,
        config_cmd,
        idp_cmd,
        import_cmd,
        logs,
        remote_cmd,
        secrets_cmd,
        service_args,
        token_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="chctl",
        description="Keep MCP server credentials valid and written into opencode's config.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_cmd.add_config_parsers(sub)

    _add_own_parsers(sub)
    auth_cmd.add_auth_parsers(sub)
    idp_cmd.add_idp_parsers(sub)
    check_cmd.add_check_parser(sub)
    token_cmd.add_token_parser(sub)
    import_cmd.add_import_parser(sub)
    logs.add_logs_parser(sub)
    remote_cmd.add_remote_parsers(sub)
    secrets_cmd.add_secrets_parser(sub)
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
    """What argparse would make of `args_list` for `bridge NAME`, `token NAME ...`, `search TEXT [--json]` and
    the spellings in FAST_SPELLINGS; else None."""
    if len(args_list) == 2 and args_list[0] == "bridge" and not args_list[1].startswith("-"):
        return FastArgs(command="bridge", name=args_list[1], func=cmd_bridge)  # agents spawn it per session
    if args_list[:1] == ["token"]:  # agents run it at every connect
        from context_harness.client import token_cmd

        token = token_cmd.parse_fast(args_list)
        return None if token is None else FastArgs(command="token", func=token_cmd.cmd_token, **token)
    if args_list[:1] == ["search"]:  # as cheap as `chctl status` once the daemon's cache is warm
        from context_harness.client import search_cmd

        search = search_cmd.parse_fast(args_list)
        return None if search is None else FastArgs(command="search", func=search_cmd.cmd_search, **search)
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
