"""The Python API for scripts: ask the running daemon for a credential that is valid now.

    from context_harness.api import get_bearer_token
    from context_harness.primitives.result import Failure

    token = get_bearer_token("linear")
    if isinstance(token, Failure):
        raise SystemExit(f"{token.error} ({token.hint})")
    headers = {"Authorization": f"Bearer {token.value}"}

Both functions talk to `context-harnessd` over the user's socket (method `token.get`, the one `chctl token`
uses: same refresh, same log line, same count in `chctl status --json`), starting the daemon if none answers.
The refresh token never leaves the daemon. Standard library only, besides `Result` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

DEFAULT_MIN_VALID_S = 60.0


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


def ensure_valid_token(name: str, *, min_valid_s: float = DEFAULT_MIN_VALID_S) -> Result[ValidToken]:
    """`name`'s credential, valid for at least `min_valid_s` more seconds where its server allows it.

    A token that expires sooner is refreshed first, by the daemon, through the same single flight as its own
    refresher (a refresh already under way is waited for, not repeated); the margin is capped at half the
    token's lifetime. A `Failure` says why there is none: `AUTH_REQUIRED` (no login, or the login was
    refused: run `chctl auth NAME`), `TOKEN_EXPIRED`, `NOT_FOUND` (unknown server), `DAEMON_UNAVAILABLE`.
    """
    try:
        found = call("token.get", {"name": name, "min_valid_s": min_valid_s})
    except RpcError as exc:
        return Failure(exc.message, _code(exc.code), exc.hint)
    return Success(
        ValidToken(
            server=found["name"],
            token=found["token"],
            header_name=found["header_name"],
            header_value=found["header_value"],
            expires_at=found["expires_at"],
        )
    )


def get_bearer_token(name: str) -> Result[str]:
    """The access token (or API key) of `name` that is valid now: `ensure_valid_token(name)`'s `token`."""
    found = ensure_valid_token(name)
    return found if isinstance(found, Failure) else Success(found.value.token)


def _code(name: str) -> ErrorCode:
    try:
        return ErrorCode(name)
    except ValueError:  # a newer daemon's code this package does not know
        return ErrorCode.INTERNAL
