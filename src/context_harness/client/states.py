"""A server's state as `chctl status` says it: in words, with the next action, and a colour.

Green: nothing to do. Yellow: the daemon is acting (refreshing, retrying) or a login will be due by itself.
Red: it needs you. Imports nothing but output.py: `chctl status` must start fast.
"""

from __future__ import annotations

from context_harness.client.output import when

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any


def describe(server: dict[str, Any], now: float) -> tuple[str, str]:
    """(words, colour) for one row of the `status` RPC."""
    name, state = server["name"], server["state"]
    if server.get("via"):  # a remote machine's server, carried by the laptop's daemon: its state there
        if state == "delegated":  # the laptop did not say (see the last error)
            return f"via {server['via']}", "yellow"
        words, colour = describe({**server, "via": None, "has_refresh_token": True}, now)  # the laptop refreshes
        return f"{words} via {server['via']}", colour
    if state == "secret_unreadable":  # in the keychain, which did not give it (locked, not running)
        return "secret unreadable: keychain → chctl doctor", "red"
    if state in ("pending_auth", "needs_reauth"):
        return f"needs login → {server.get('fix') or f'chctl auth {name}'}", "red"
    if state == "needs_key":
        return f"needs a key → chctl add {name} -k KEY", "red"
    if server.get("scopes_wanted"):
        return f"needs scope {' '.join(server['scopes_wanted'])} → chctl auth {name}", "red"
    if state == "retrying":
        error = server.get("last_error") or "refresh failed"
        return f"retrying (next try {when(server.get('next_refresh_at'), now)}): {error}", "yellow"
    if state == "refreshing":
        return "refreshing…", "yellow"
    refused = server.get("refused")  # the server refuses what is stored: until a request succeeds again
    if refused == 403:
        return f"forbidden (403) → chctl check {name}", "red"
    if refused and server.get("auth_type") == "api-key":
        return f"key refused ({refused}) → chctl add {name} -k KEY", "red"
    if refused:
        return f"token refused ({refused}) → chctl auth {name}", "red"
    if state == "api_key":
        return "ok (API key)", "green"
    if state == "no_auth":
        return "ok (no auth)", "green"
    renewed = server.get("has_refresh_token", True) or server.get("login") in ("client_credentials", "idp")
    if state == "active" and server.get("expires_at") and not renewed:
        return f"expires {when(server['expires_at'], now)}, no refresh token", "yellow"
    if state == "active":
        return "ok", "green"
    return state, "yellow"
