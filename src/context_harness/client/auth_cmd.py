"""`chctl auth NAME` and `chctl refresh NAME`: start a login in the daemon, show the URL, wait for the end.

Standard library only. The URL is printed alone on one line of stdout (scripts and people copy it from there)
and opened with `webbrowser` (argv, never a shell; http/https only). Without a browser — `--no-browser`, SSH,
no display — a redirect URL pasted on stdin finishes the login instead of the callback.
"""

from __future__ import annotations

import os
import sys
import time

from context_harness.client import states
from context_harness.client.arguments import add_json_flag
from context_harness.client.output import print_hint, print_json, say_made_private
from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms of start-up)

if TYPE_CHECKING:  # chctl imports this module to build its parser, for most commands: nothing heavy at import
    import argparse
    from typing import Any

CANCEL_ON = (KeyboardInterrupt,)
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM private key is a few KiB; the daemon refuses a larger one anyway
LIVE_INTERVAL_S = 1.0  # the waiting line on a terminal shows seconds
PLAIN_INTERVAL_S = 60.0  # ... elsewhere (a log, a pipe), one line a minute is enough


def env_prefix(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def add_auth_parsers(sub: Any) -> None:
    p = sub.add_parser("auth", help="log in to an OAuth MCP server (or --status, --logout)")
    p.add_argument("name", help="the server to log in to (added with `chctl add NAME` first)")
    p.add_argument("--client-id", help="a pre-registered OAuth client id (else $NAME_CLIENT_ID, the registry, DCR)")
    p.add_argument(
        "--client-secret",
        help="its secret, if the provider issued one: `-` asks for it without echo (better: $NAME_CLIENT_SECRET; "
        "a value here is visible to other users in `ps`)",
    )
    p.add_argument(
        "--token-auth-method",
        choices=["client_secret_basic", "client_secret_post", "none"],
        help="how the client authenticates at the token endpoint (else what the server and registration say)",
    )
    p.add_argument("--scope", action="append", metavar="S", help="scope to ask for (repeatable)")
    p.add_argument(
        "--private-key",
        metavar="FILE",
        help="a server added with --client-credentials: a new PEM key (private_key_jwt)",
    )
    p.add_argument("--signing-alg", choices=["ES256", "RS256"], help="the key's algorithm (default ES256)")
    p.add_argument("--port", type=int, default=0, help="fixed callback port (exact redirect matching, ssh -L)")
    p.add_argument("--no-browser", action="store_true", help="print the URL; accept the pasted redirect URL")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="how long to wait (300)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="state, expiry, scopes, issuer; exit 0 if usable")
    mode.add_argument("--logout", action="store_true", help="revoke at the server, then forget the tokens")
    add_json_flag(p)
    p.set_defaults(func=cmd_auth)

    p = sub.add_parser("refresh", help="refresh a server's OAuth token now")
    p.add_argument("name", help="the server whose token to refresh")
    add_json_flag(p)
    p.set_defaults(func=cmd_refresh)


def _expiry(ts: float | None) -> str:
    if ts is None:
        return "no expiry given"
    left = ts - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f"expires {stamp} ({'in ' + str(round(left)) + 's' if left >= 0 else 'expired'})"


def cmd_auth(args: argparse.Namespace) -> int:
    if args.status:
        return auth_status(args)
    if args.logout:
        result = call("auth.logout", {"name": args.name})
        print(f"logged out of {args.name}" + (" (revoked at the server)" if result["revoked"] else ""))
        for outcome in result.get("tokens", []):
            if outcome["revoked"]:
                continue
            kind = outcome["token"].replace("_", " ")
            valid_until = outcome["valid_until"]
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(valid_until)) if valid_until else "it expires"
            print(f"  {kind} NOT revoked: {outcome['reason']}; it stays valid {until}", file=sys.stderr)
        stuck = result.get("configs", {}).get("failed", {})
        for path, reason in stuck.items():
            print(f"  header NOT removed from {printable(path)}: {printable(reason)}", file=sys.stderr)
        if stuck:
            print_hint(f"remove the {args.name} header from the file(s) above by hand", file=sys.stderr)
        return 1 if stuck else 0
    return auth_login(args)


def auth_status(args: argparse.Namespace) -> int:
    status = call("auth.status", {"name": args.name})
    if args.json:
        print_json(status)
    else:
        words, _colour = states.describe(status, time.time())  # as `chctl status` says it
        expiry = f", {_expiry(status['expires_at'])}" if status["expires_at"] else ""
        print(f"{printable(status['name'])}: {printable(words)}{expiry}")
        if status.get("issuer"):
            print(f"  issuer: {printable(status['issuer'])}")
        if status.get("scopes"):
            print(f"  scopes: {printable(' '.join(status['scopes']))}")
        if status.get("last_error"):
            print(f"  last error: {printable(status['last_error'])}")
        if not status["usable"]:
            print_hint(f"run `chctl auth {args.name}` to log in", file=sys.stderr)
    return 0 if status["usable"] else 1


def _browser_available() -> bool:
    # On Linux without a display, webbrowser would fall back to a text browser in this terminal.
    if os.environ.get("BROWSER"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def open_browser(url: str) -> bool:
    if not url.startswith(("https://", "http://")) or not _browser_available():
        return False
    import webbrowser

    try:
        return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False


def read_private_key(path: str, name: str, *, adding: bool) -> str:
    """The PEM key in `path`, read here with the user's rights; a file that cannot be read is a clear error."""
    from context_harness.client.rpc_client import RpcError

    try:
        with open(path, encoding="ascii") as file:
            return file.read(MAX_KEY_FILE_BYTES)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a PEM text file"
        hint = (
            f"give `chctl add {name} --private-key FILE` a PEM file you can read"
            if adding
            else f"give `chctl auth {name} --private-key FILE` a PEM file you can read"
        )
        raise RpcError("INVALID_PARAMS", f"cannot read the key file {path}: {reason}", hint) from None


def client_secret(flag: str | None, prefix: str) -> str | None:
    """From `--client-secret -` (a hidden prompt), the env var, or the flag itself (with a warning: argv is public)."""
    if flag == "-":
        import getpass

        return getpass.getpass("client secret: ") or None
    if flag:
        print(
            f"warning: --client-secret is visible to other users in `ps`; set ${prefix}_CLIENT_SECRET or pass "
            "`--client-secret -` to type it instead",
            file=sys.stderr,
        )
        return flag
    return os.environ.get(f"{prefix}_CLIENT_SECRET")


def auth_login(args: argparse.Namespace) -> int:
    prefix = env_prefix(args.name)
    params: dict[str, Any] = {"name": args.name, "port": args.port, "timeout_s": args.timeout}
    client_id = args.client_id or os.environ.get(f"{prefix}_CLIENT_ID")
    secret = client_secret(args.client_secret, prefix)
    if client_id:
        params["client_id"] = client_id
    if secret:  # a login without a browser takes a new secret alone; a browser login only with --client-id
        params["client_secret"] = secret
    if args.private_key:
        params["private_key"] = read_private_key(args.private_key, args.name, adding=False)
        params["signing_alg"] = args.signing_alg or "ES256"
    if args.scope:
        params["scopes"] = args.scope
    if args.token_auth_method:
        params["token_auth_method"] = args.token_auth_method
    deadline = time.monotonic() + args.timeout  # the daemon's clock starts during auth.start
    started = call("auth.start", params)
    if started.get("result") is not None:  # a login without a browser: done already
        return _print_logged_in(args, started["result"])
    flow_id, url = started["flow_id"], started["authorization_url"]
    print(printable(url), flush=True)
    opened = False if args.no_browser else open_browser(url)
    if opened:
        print("opened the login page in your browser", file=sys.stderr)
    else:
        import threading

        print(
            "open the URL above in a browser. If its redirect cannot reach this machine, paste the URL the "
            "browser ends on here and press Enter.",
            file=sys.stderr,
        )
        threading.Thread(target=_forward_pastes, args=(flow_id,), daemon=True).start()
    what = "the browser" if opened else "the login"
    # On a terminal the line is redrawn in place; not while a pasted URL is being typed on it.
    live = opened and sys.stderr.isatty()
    try:
        result = wait_for_login(flow_id, deadline, what=what, live=live)
    except CANCEL_ON:
        try:
            call("auth.cancel", {"flow_id": flow_id})
        except RpcError:
            pass
        print(("\n" if live else "") + f"cancelled the login to {args.name}", file=sys.stderr)
        raise
    return _print_logged_in(args, result)


def _print_logged_in(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print_json(result)
        return 0
    renewed = result["has_refresh_token"] or result.get("login") in ("client_credentials", "idp")
    print(
        f"logged in to {args.name}: {_expiry(result['expires_at'])}"
        + ("" if renewed else "; no refresh token was issued, so a new login is due then")
    )
    for path in result["configs"]:
        print(f"  header written to {path}")
    say_made_private(result.get("made_private") or {})
    for path, error in result.get("config_errors", {}).items():
        print(f"  could not write {path}: {printable(error)}", file=sys.stderr)
    if not result["configs"]:
        print(f"  next: `chctl add {args.name}` writes it into an opencode config")
    return 0


def _left(seconds: float) -> str:
    whole = max(0, int(-(-seconds // 1)))  # rounded up: "0:01" until the very end
    return f"{whole // 60}:{whole % 60:02d}"


def wait_for_login(flow_id: str, deadline: float, *, what: str, live: bool) -> Any:
    """`auth.wait` in a thread while this one shows the time left: redrawn every second on a terminal,
    a plain line a minute otherwise. Ctrl-C reaches this thread (the caller cancels the flow)."""
    import threading

    outcome: dict[str, Any] = {}

    def wait() -> None:
        try:
            outcome["result"] = call("auth.wait", {"flow_id": flow_id})
        except Exception as exc:  # raised again in the main thread, as if it had called auth.wait itself
            outcome["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    interval = LIVE_INTERVAL_S if live else PLAIN_INTERVAL_S
    while waiter.is_alive():
        line = f"waiting for {what}… {_left(deadline - time.monotonic())} left, Ctrl-C cancels"
        print("\r\x1b[K" + line if live else line, end="" if live else "\n", file=sys.stderr, flush=True)
        waiter.join(interval)
    if live:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _forward_pastes(flow_id: str) -> None:
    """Read pasted redirect URLs from stdin; at EOF just keep waiting for the browser's callback."""
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        try:
            call("auth.paste", {"flow_id": flow_id, "redirect_url": text})
        except RpcError:
            return
        return


def cmd_refresh(args: argparse.Namespace) -> int:
    result = call("token.refresh", {"name": args.name})
    if args.json:
        print_json(result)
        return 0
    print(f"refreshed {args.name}: {_expiry(result['expires_at'])}")
    for path, error in result.get("config_errors", {}).items():
        print(f"  could not write {path}: {printable(error)}", file=sys.stderr)
    return 0
