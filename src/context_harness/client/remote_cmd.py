"""`chctl share NAME…`, `chctl unshare NAME…` and `chctl remote ssh-config HOST`: using this machine's logins
from machines you SSH into, through the daemon's restricted `remote.sock` (see docs/guide.md, "Remote machines")."""

from __future__ import annotations

import getpass
import os
import sys

from context_harness.client.output import print_hint
from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

REMOTE_SOCKET_NAME = "delegate.sock"
SSH_G_TIMEOUT_S = 5.0  # `ssh -G` only reads its configuration: a hang is a broken ssh


def cmd_share(args: argparse.Namespace) -> int:
    method = "share.add" if args.command == "share" else "share.remove"
    result = call(method, {"names": args.names})
    shared = result["shared"]
    print("shared with other machines: " + (", ".join(printable(n) for n in shared) if shared else "nothing"))
    if shared and args.command == "share":
        print_hint("`chctl remote ssh-config HOST` shows how to forward the remote socket", file=sys.stdout)
    return 0


def ssh_config(host: str, local_socket: str, remote_socket: str) -> str:
    return (
        "# In ~/.ssh/config on this machine:\n"
        f"Host {host}\n"
        f"    RemoteForward {remote_socket} {local_socket}\n"
        "\n"
        f"# On {host}, in /etc/ssh/sshd_config (a reconnect then replaces the socket a closed session left):\n"
        "#     StreamLocalBindUnlink yes\n"
        f"# On {host}, in ~/.context-harness/daemon.env (then `chctl daemon stop`; the next chctl starts it):\n"
        f"#     CH_DELEGATE_SOCKET={remote_socket}\n"
    )


def ssh_user(host: str) -> str | None:
    """The user `ssh HOST` logs in as (`User` in ~/.ssh/config, else the local name), from `ssh -G`, which reads
    the configuration and connects to nothing; None without ssh."""
    import subprocess

    try:
        shown = subprocess.run(
            ["ssh", "-G", "--", host], capture_output=True, text=True, timeout=SSH_G_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in shown.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "user" and value:
            return value
    return None


def home_of(user: str) -> str:
    """Where a Unix system keeps `user`'s home by default: root's is /root, everyone else's under /home."""
    return "/root" if user == "root" else f"/home/{user}"


def cmd_remote(args: argparse.Namespace) -> int:
    summary: dict[str, Any] = call("daemon.status")
    local_socket = summary.get("remote_socket")
    if not local_socket:
        raise RpcError("INVALID_PARAMS", "the remote socket is off", "unset CH_REMOTE_SOCKET (empty turns it off)")
    user = args.user or ssh_user(args.host) or getpass.getuser()
    remote_socket = args.remote_path or f"{home_of(user)}/.context-harness/{REMOTE_SOCKET_NAME}"
    if not args.remote_path:  # the home is a guess: the remote machine is not asked
        print(
            f"note: guessed {user}'s home on {args.host} to be {home_of(user)}; if it is not (`ssh {args.host} "
            "'echo $HOME'` tells), run this again with --remote-path PATH",
            file=sys.stderr,
        )
    if not os.path.isabs(remote_socket):
        raise RpcError("INVALID_PARAMS", "--remote-path must be absolute", "e.g. /home/me/.context-harness/x.sock")
    if any(c.isspace() for c in args.host + remote_socket + local_socket):
        raise RpcError("INVALID_PARAMS", "a host or path with spaces cannot go into ~/.ssh/config unquoted")
    print(ssh_config(args.host, local_socket, remote_socket), end="")
    return 0


def add_remote_parsers(sub: Any) -> None:
    for command, verb in (("share", "let machines you SSH into use"), ("unshare", "stop sharing")):
        p = sub.add_parser(command, help=f"{verb} these servers through the remote socket")
        p.add_argument("names", nargs="+", metavar="NAME", help="servers by name, as in `chctl status`")
        p.set_defaults(func=cmd_share)
    p = sub.add_parser("remote", help="forward this machine's logins to another machine over SSH")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("ssh-config", help="the ~/.ssh/config lines that forward the remote socket to HOST")
    q.add_argument("host", help="the Host name in ~/.ssh/config")
    q.add_argument("--user", help="your user name on HOST (default: the same as here)")
    q.add_argument("--remote-path", help="where the socket appears on HOST (default: in ~/.context-harness)")
    q.set_defaults(func=cmd_remote)
