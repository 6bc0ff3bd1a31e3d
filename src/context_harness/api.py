"""The Python API for scripts: ask the running daemon for a credential that is valid now.

    from context_harness.api import get_bearer_token
    from context_harness.primitives.result import Failure

    token = get_bearer_token("linear")
    if isinstance(token, Failure):
        raise SystemExit(f"{token.error} ({token.hint})")
    headers = {"Authorization": f"Bearer {token.value}"}

Both functions talk to `context-harnessd` over the user's socket (method `token.get`, the one `chctl token`
uses: same refresh, same log line, same count in `chctl status --json`, the same URL check for Claude Code's
`CLAUDE_CODE_MCP_SERVER_URL`). The refresh token never leaves the daemon. Standard library only, besides
`Result` itself.

They do not start a daemon unless asked (`autostart=True`): the daemon serves every later caller, so one a
script started would keep that script's settings for all of them. Asked, they start it with its own settings
(`~/.context-harness/daemon.env`) and none from the script's environment (client/daemon_env.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from context_harness.client.rpc_client import NOT_ANSWERING, RpcError, call
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

DEFAULT_MIN_VALID_S = 60.0
CLAUDE_SERVER_URL = "CLAUDE_CODE_MCP_SERVER_URL"  # the URL Claude Code's headersHelper is asked for
NOT_STARTED_HINT = (
    "start it with `chctl daemon start` (it takes daemon.env and that shell's CH_* and proxy variables), or "
    "pass autostart=True to start it with daemon.env alone"
)


@dataclass(frozen=True, slots=True)
class ValidToken:
    """A credential the daemon handed out: send `headers` (its `header_name: header_value`) with a request."""

    server: str
    token: str = field(repr=False)  # the access token, or the API key of an API-key server
    header_name: str  # `Authorization`, or the server's own header for an API key (`X-API-Key`)
    header_value: str = field(repr=False)  # `Bearer <token>`, or the bare key
    expires_at: float | None  # Unix time; None: an API key, or a token without a known expiry

    @property
    def headers(self) -> dict[str, str]:
        return {self.header_name: self.header_value}


def ensure_valid_token(
    name: str, *, min_valid_s: float = DEFAULT_MIN_VALID_S, for_url: str | None = None, autostart: bool = False
) -> Result[ValidToken]:
    """`name`'s credential, valid for at least `min_valid_s` more seconds where its server allows it.

    A token that expires sooner is refreshed first, by the daemon, through the same single flight as its own
    refresher (a refresh already under way is waited for, not repeated); the margin is capped at half the
    token's lifetime. With `for_url` (by default `CLAUDE_CODE_MCP_SERVER_URL` when set, as for `chctl token`)
    nothing is handed out unless it is the URL recorded for `name` (`INVALID_PARAMS` otherwise). With no daemon
    running, `DAEMON_UNAVAILABLE` unless `autostart`: then one is started with daemon.env alone. A `Failure`
    says why there is none: `AUTH_REQUIRED` (no login, or the login was refused: run `chctl auth NAME`),
    `TOKEN_EXPIRED`, `NOT_FOUND` (unknown server), `INVALID_PARAMS`, `DAEMON_UNAVAILABLE`.
    """
    params: dict[str, object] = {"name": name, "min_valid_s": min_valid_s}
    asking = for_url if for_url is not None else os.environ.get(CLAUDE_SERVER_URL)
    if asking:
        params["for_url"] = asking
    try:
        found = call("token.get", params, autostart=autostart, settings=False)
    except RpcError as exc:
        hint = NOT_STARTED_HINT if exc.message.startswith(NOT_ANSWERING) else exc.hint
        return Failure(exc.message, _code(exc.code), hint)
    return Success(
        ValidToken(
            server=found["name"],
            token=found["token"],
            header_name=found["header_name"],
            header_value=found["header_value"],
            expires_at=found["expires_at"],
        )
    )


def get_bearer_token(name: str, *, for_url: str | None = None, autostart: bool = False) -> Result[str]:
    """The access token (or API key) of `name` that is valid now: `ensure_valid_token(name)`'s `token`."""
    found = ensure_valid_token(name, for_url=for_url, autostart=autostart)
    return found if isinstance(found, Failure) else Success(found.value.token)


def _code(name: str) -> ErrorCode:
    try:
        return ErrorCode(name)
    except ValueError:  # a newer daemon's code this package does not know
        return ErrorCode.INTERNAL
