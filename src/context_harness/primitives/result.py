"""`Result`: every expected failure is a value (`Failure` with an `ErrorCode` and a hint), not an exception."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

T = TypeVar("T")


class ErrorCode(StrEnum):
    """Why something failed. The RPC layer sends the name; `chctl` prints it as `error[CODE]`."""

    NOT_FOUND = "NOT_FOUND"  # unknown server, flow or file
    AUTH_REQUIRED = "AUTH_REQUIRED"  # a key or a login is needed first
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # expired and cannot be refreshed
    CONFIG_MISSING = "CONFIG_MISSING"  # no opencode config where one was looked for
    CONFIG_INVALID = "CONFIG_INVALID"  # a config (or registry) does not parse or fit the schema
    TIMEOUT = "TIMEOUT"  # a flow or a request took too long
    STATE_MISMATCH = "STATE_MISMATCH"  # OAuth `state` or `iss` did not match: possible CSRF / mix-up
    INVALID_GRANT = "INVALID_GRANT"  # the authorization server rejected the grant
    INVALID_CLIENT = "INVALID_CLIENT"  # the authorization server no longer knows our client: it is forgotten
    ACCESS_DENIED = "ACCESS_DENIED"  # the user declined consent
    OAUTH_ERROR = "OAUTH_ERROR"  # the server breaks the spec (issuer mismatch, no S256, bad metadata)
    NETWORK = "NETWORK"  # connection refused, reset, DNS, 5xx
    PERMISSION_DENIED = "PERMISSION_DENIED"  # a file or directory cannot be written
    INVALID_PARAMS = "INVALID_PARAMS"  # the caller sent something unusable
    DAEMON_UNAVAILABLE = "DAEMON_UNAVAILABLE"  # chctl cannot reach the daemon
    DAEMON_UNTRUSTED = "DAEMON_UNTRUSTED"  # the socket's listener is another user's: chctl sent it nothing
    # A bound on what a peer may use at once was reached (connections, bridges, logins, client registrations):
    # nothing is wrong with the request, try again later.
    LIMIT_REACHED = "LIMIT_REACHED"
    UNSUPPORTED = "UNSUPPORTED"  # the platform lacks what is needed (e.g. no systemd user session)
    KEYCHAIN_UNAVAILABLE = "KEYCHAIN_UNAVAILABLE"  # CH_SECRET_STORE=keyring (or a move there) and no keychain answered
    INTERNAL = "INTERNAL"  # a bug: please report it


@dataclass(frozen=True, slots=True)
class Success(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Failure:
    """An expected failure. `error` is for people and never holds a secret; `hint` says what to do."""

    error: str
    code: ErrorCode
    hint: str | None = None


Result: TypeAlias = Success[T] | Failure
