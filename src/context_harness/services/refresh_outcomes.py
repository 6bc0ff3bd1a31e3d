"""The outcomes of one refresh attempt (what the refresher plans from and callers answer with), and the
words shared by everything that reports them: `refresh_result` is the one place an outcome becomes words."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal, assert_never

from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import ErrorCode, Failure, Result, Success


@dataclass(frozen=True, slots=True)
class RefreshDone:
    """New tokens are stored and published."""

    credential: Credential


@dataclass(frozen=True, slots=True)
class RefreshNotNeeded:
    """Someone else (another process, a concurrent call) refreshed it while we waited for the lock."""

    credential: Credential


@dataclass(frozen=True, slots=True)
class RefreshRetry:
    """A transient failure: keep the current token while it lasts, try again after a backoff."""

    reason: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RefreshNeedsReauth:
    """Only a person can fix this (invalid_grant, no refresh token, no credential): `chctl auth NAME`.
    `code` is INVALID_CLIENT when the server forgot our client (its registration is dropped already)."""

    reason: str
    code: ErrorCode = ErrorCode.INVALID_GRANT
    fix: str | None = None  # the command that mends it, when it is not `chctl auth NAME`


@dataclass(frozen=True, slots=True)
class RefreshImpossible:
    """No refresh token was issued: the token is used until it expires, then only a new login helps.
    Not an error and not worth retrying: look again when it has expired."""

    credential: Credential


RefreshAttempt = RefreshDone | RefreshNotNeeded | RefreshRetry | RefreshNeedsReauth | RefreshImpossible

# Why the caller refreshed, which decides what a failed attempt means to it: `asked`, a refresh was asked for
# (`chctl refresh`, an import of a login about to expire); `due`, a token to hand out was about to expire
# (`chctl token`, the Python API); `refused`, the server refused the token in use (the bridge).
Occasion = Literal["asked", "due", "refused"]


def refresh_result(name: str, attempt: RefreshAttempt, occasion: Occasion) -> Result[Credential]:
    """The credential to use after `attempt`, or the failure to show for it. Exhaustive: a new kind of
    outcome is a type error here until it is given its words."""
    match attempt:
        case RefreshDone(credential) | RefreshNotNeeded(credential):
            return Success(credential)
        case RefreshRetry(reason, _):
            return _failed_for_now(name, reason, occasion)
        case RefreshNeedsReauth(reason, code, fix):
            refused = needs_login(name, reason, code, fix)
            # A caller of `chctl token` or the API tells "log in" by AUTH_REQUIRED alone (documented there).
            return replace(refused, code=ErrorCode.AUTH_REQUIRED) if occasion == "due" else refused
        case RefreshImpossible(credential):
            return _no_refresh_token(name, credential, occasion)
        case _:
            assert_never(attempt)


def _failed_for_now(name: str, reason: str, occasion: Occasion) -> Failure:
    """A transient failure: the daemon retries by itself."""
    match occasion:
        case "asked":
            return Failure(
                f"refresh of {name} failed for now: {reason}",
                ErrorCode.NETWORK,
                "the daemon keeps retrying in the background; see `chctl status`",
            )
        case "due":
            return Failure(
                f"{name}'s token expired and could not be refreshed for now: {reason}",
                ErrorCode.TOKEN_EXPIRED,
                "the daemon keeps retrying; `chctl status` shows the next attempt",
            )
        case "refused":
            return Failure(
                f"{name}'s token was refused and a refresh failed for now: {reason}",
                ErrorCode.TOKEN_EXPIRED,
                "the daemon keeps retrying; try again shortly",
            )
        case _:
            assert_never(occasion)


def _no_refresh_token(name: str, credential: Credential, occasion: Occasion) -> Failure:
    """No refresh token was issued: only a new login gives a token that lasts longer."""
    login = f"run `chctl auth {name}`"
    match occasion:
        case "asked":
            note = no_refresh_token_note(credential)
            return Failure(f"{name}: {note}", ErrorCode.AUTH_REQUIRED, f"{login} before the token expires")
        case "due":
            return Failure(f"{name}'s token expired and no refresh token was issued", ErrorCode.TOKEN_EXPIRED, login)
        case "refused":
            return Failure(f"{name} refused its token and no refresh token was issued", ErrorCode.AUTH_REQUIRED, login)
        case _:
            assert_never(occasion)


def needs_login(name: str, reason: str, code: ErrorCode, fix: str | None = None) -> Failure:
    """The error for a credential only a new login can mend (the refresh was refused); `fix`: the command that
    mends it, when it is not `chctl auth NAME` (a login without a person, an identity provider's sign-in)."""
    if fix is not None:
        return Failure(f"{name} needs a new login: {reason}", code, f"run `{fix}`")
    hint = f"run `chctl auth {name}`"
    if code is ErrorCode.INVALID_CLIENT:
        hint += " (it registers a new client; pass --client-id if you registered yours by hand)"
    return Failure(f"{name} needs a new login: {reason}", code, hint)


def no_refresh_token_note(credential: Credential, now: float | None = None) -> str:
    """`expires in 42m, no refresh token: run chctl auth NAME before then`."""
    tokens = credential.tokens
    expires_at = tokens.expires_at if tokens is not None else None
    left = "at an unknown time" if expires_at is None else "in " + _duration(expires_at - (now or time.time()))
    return f"expires {left}, no refresh token: run `chctl auth {credential.name}` before then"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def env_prefix(name: str) -> str:
    """`atlassian` → `ATLASSIAN`, `my-server.dev` → `MY_SERVER_DEV` (for `<NAME>_CLIENT_ID`)."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()
