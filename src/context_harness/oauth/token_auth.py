"""The other way of sending a client secret, tried once when the token endpoint refuses the first.

A confidential client sends its secret with HTTP Basic (`client_secret_basic`) or in the form
(`client_secret_post`), as its registration says, and some servers hold clients to that: FastMCP's refuses
Basic for a client registered for the form. A client id the user brings with a secret says nothing about it,
and a registration response may not either. So when the token endpoint answers `invalid_client`, the request
is sent once more the other way, and the way that worked is what the caller stores with the client (and what
revocation uses later).

Why one retry is safe: a server checks the client before the grant (RFC 6749 §3.2.1, §5.2), so an
`invalid_client` answer means the code or refresh token was not looked at, let alone spent. Any other
error (`invalid_grant` above all) is never retried: an authorization code is single-use, and a refresh token
sent twice looks like a replay to servers with reuse detection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import structlog

from context_harness.oauth.token_client import PermanentError, RefreshOutcome, refresh_access_token
from context_harness.primitives.outside_values import Markers
from context_harness.primitives.result import ErrorCode, Failure

log = structlog.get_logger(__name__)

BASIC, POST = "client_secret_basic", "client_secret_post"

Outcome = TypeVar("Outcome")


def other_secret_method(auth_method: str | None, client_secret: str | None) -> str | None:
    """The other way to send `client_secret`; None for a public client or a method with no counterpart.
    No method at all means Basic (what `client_authentication` sends then)."""
    if not client_secret or auth_method not in (None, BASIC, POST):
        return None
    return BASIC if auth_method == POST else POST


def client_refused(outcome: object) -> bool:
    """The token endpoint said `invalid_client` (a code exchange's Failure or a refresh's PermanentError)."""
    return isinstance(outcome, Failure | PermanentError) and outcome.code is ErrorCode.INVALID_CLIENT


async def either_way(
    attempt: Callable[[str | None], Awaitable[Outcome]],
    auth_method: str | None,
    client_secret: str | None,
    *,
    grant: str,
) -> tuple[Outcome, str | None]:
    """`attempt(auth_method)`; when the client is refused and has a secret, `attempt(the other method)` once.
    Returns the outcome and the method of the last request (the one to store when it worked)."""
    outcome = await attempt(auth_method)
    other = other_secret_method(auth_method, client_secret)
    if other is None or not client_refused(outcome):
        return outcome, auth_method
    log.info("token_auth_method_retried", refused=auth_method or BASIC, retried_with=other, grant=grant)
    return await attempt(other), other


async def refresh_either_way(
    session: aiohttp.ClientSession,
    endpoint: str,
    *,
    refresh_token: str,
    client_id: str,
    client_secret: str | None,
    auth_method: str | None,
    timeout_s: float,
    connect_timeout_s: float | None = None,
    resource: str | None = None,
    revocation_endpoint: str | None = None,
    markers: Markers,
) -> tuple[RefreshOutcome, str | None]:
    """One refresh (`refresh_access_token`), its secret sent the other way once if the client is refused; the
    outcome and the way of sending that was used last (to store when it worked)."""
    return await either_way(
        lambda method: refresh_access_token(
            session,
            endpoint,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=method,
            resource=resource,
            revocation_endpoint=revocation_endpoint,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            markers=markers,
        ),
        auth_method,
        client_secret,
        grant="refresh_token",
    )
