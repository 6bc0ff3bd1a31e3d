"""The outcomes of one refresh attempt (what the refresher plans from and callers answer with), and the
words shared by everything that reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import ErrorCode, Failure


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


@dataclass(frozen=True, slots=True)
class RefreshImpossible:
    """No refresh token was issued: the token is used until it expires, then only a new login helps.
    Not an error and not worth retrying: look again when it has expired."""

    credential: Credential


RefreshAttempt = RefreshDone | RefreshNotNeeded | RefreshRetry | RefreshNeedsReauth | RefreshImpossible


def needs_login(name: str, reason: str, code: ErrorCode) -> Failure:
    """The error for a credential only a new login can mend (the refresh was refused)."""
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
