"""The one place OAuth code touches the network: small JSON/form requests over aiohttp.

Failures come back as `Failure` values: a timeout is TIMEOUT, anything else at the transport level is
NETWORK. Messages name the host and path only — never the query, a body or a header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from context_harness.net.failures import ReachFailure
from context_harness.net.session import new_session
from context_harness.primitives.outside_values import describe_url
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

log = structlog.get_logger(__name__)

__all__ = ["HttpResponse", "new_session", "request"]

DEFAULT_TIMEOUT_S = 30.0
# Metadata, registration and token responses are small; a larger body is a broken or hostile server.
MAX_BODY_BYTES = 1 << 20
JSON_ACCEPT = {"Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A fully read response. `body` may hold secrets (tokens): never log it."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def json(self) -> Any | None:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
    json_body: Any | None = None,
    auth_header: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float | None = None,
) -> Result[HttpResponse]:
    """Send one request and read the whole response (redirects are not followed), all within `timeout_s`; the
    connection (TLS included) within `connect_timeout_s` if given: a request that never left is told apart.

    A connection the peer closed before answering is retried once on a fresh connection: that is how
    a pooled keep-alive connection that the server already closed shows up. A second close is a
    NETWORK failure. (A token request retried this way uses the same grant, exactly as the
    scheduler's next attempt would.)
    """
    all_headers = dict(headers or {})
    if auth_header is not None:
        all_headers["Authorization"] = auth_header
    for attempt in (1, 2):
        deadlines = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        outcome = await _attempt(session, method, url, all_headers, form, json_body, deadlines)
        if not isinstance(outcome, str):
            return outcome
        log.info("http_connection_closed_by_peer", url=describe_url(url), attempt=attempt)
    return Failure(
        f"{describe_url(url)} closed the connection without a complete answer",
        ErrorCode.NETWORK,
        "the server may be restarting; try again shortly",
    )


async def _attempt(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    form: Mapping[str, str] | None,
    json_body: Any | None,
    deadlines: aiohttp.ClientTimeout,
) -> Result[HttpResponse] | str:
    where = describe_url(url)
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=dict(form) if form is not None else None,
            json=json_body,
            allow_redirects=False,
            timeout=deadlines,
        ) as resp:
            body = bytearray()
            # Read to the end: a body cut short raises ClientPayloadError only at its last read.
            while chunk := await resp.content.read(64 * 1024):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return Failure(f"{where} sent an oversized response", ErrorCode.OAUTH_ERROR)
            return Success(HttpResponse(resp.status, dict(resp.headers), bytes(body)))
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
        return "disconnected"
    except TimeoutError as exc:
        if isinstance(exc, aiohttp.ConnectionTimeoutError) and deadlines.sock_connect is not None:
            return Failure(f"{where} took no connection within {deadlines.sock_connect:g} s", ErrorCode.NETWORK)
        return Failure(f"{where} did not answer within {deadlines.total:g} s", ErrorCode.TIMEOUT)
    except ReachFailure as exc:
        return exc.failure
    except aiohttp.InvalidURL:
        return Failure(f"invalid URL {where!r}", ErrorCode.INVALID_PARAMS)
    except (aiohttp.ClientError, OSError) as exc:
        # The exception text names host and port at most; keep only its type to be sure.
        return Failure(f"cannot reach {where} ({type(exc).__name__})", ErrorCode.NETWORK)
