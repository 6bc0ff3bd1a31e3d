"""Dynamic Client Registration (RFC 7591) for a native public client, whether a stored one still fits, and how
often new ones may be made."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable

log = structlog.get_logger(__name__)

CLIENT_NAME = "context-harness"
LOOPBACK_IPS = frozenset({"127.0.0.1", "::1"})
# New registrations at one issuer, every login of the daemon together (whichever socket asked): ten at once,
# so a person logging into ten servers of one provider is not slowed, then one every six seconds. Each one is
# a client record at the authorization server and replaces the stored client of its server; 40 remote
# `auth.start` calls in 0.2 s once made 40.
REGISTRATION_BURST = 10
REGISTRATION_REFILL_S = 6.0


class RegistrationLimit:
    """A token bucket per issuer: `spend` before each new registration."""

    def __init__(
        self,
        burst: int = REGISTRATION_BURST,
        refill_s: float = REGISTRATION_REFILL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # issuer -> (registrations left, as of when)

    def spend(self, issuer: str) -> Failure | None:
        """Take one registration at `issuer`, or a LIMIT_REACHED Failure saying when one is free again."""
        now = self.clock()
        left, since = self._buckets.get(issuer, (float(self.burst), now))
        left = min(float(self.burst), left + (now - since) / self.refill_s)
        # A full bucket is the same as none: forget those, so the table holds only issuers seen lately.
        for other, (n, at) in list(self._buckets.items()):
            if n + (now - at) / self.refill_s >= self.burst:
                del self._buckets[other]
        if left < 1:
            self._buckets[issuer] = (left, now)
            wait_s = math.ceil((1 - left) * self.refill_s)
            return Failure(
                f"too many new client registrations at {issuer} lately",
                ErrorCode.LIMIT_REACHED,
                f"try again in {wait_s} s",
            )
        self._buckets[issuer] = (left - 1, now)
        return None


def build_registration_request(
    redirect_uris: Sequence[str], scopes: Sequence[str] | None = None, client_name: str = CLIENT_NAME
) -> dict[str, Any]:
    """RFC 7591 client metadata for a native app that has no secret and wants refresh tokens."""
    request: dict[str, Any] = {
        "client_name": client_name,
        "application_type": "native",
        "redirect_uris": list(redirect_uris),
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    if scopes:
        request["scope"] = " ".join(scopes)
    return request


def parse_registration_response(
    status: int, doc: Any, issuer: str, redirect_uris: Sequence[str], now: float
) -> Result[ClientRegistration]:
    if status not in (200, 201):
        reason = ""
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            reason = f": {printable(doc['error'], SERVER_TEXT_LIMIT, ascii_only=True)}"
            if isinstance(doc.get("error_description"), str):
                reason += f" ({printable(doc['error_description'], SERVER_TEXT_LIMIT, ascii_only=True)})"
        return Failure(
            f"the authorization server refused to register a client (HTTP {status}{reason})",
            ErrorCode.OAUTH_ERROR,
            "register a client with the provider yourself, then `chctl auth NAME --client-id ID --client-secret -`",
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("client_id"), str) or not doc["client_id"]:
        return Failure("client registration response has no client_id", ErrorCode.OAUTH_ERROR)
    secret = doc.get("client_secret") if isinstance(doc.get("client_secret"), str) else None
    method = doc.get("token_endpoint_auth_method")
    if not isinstance(method, str):
        method = "client_secret_basic" if secret else "none"
    expires = doc.get("client_secret_expires_at")
    registered = doc.get("redirect_uris")
    return Success(
        ClientRegistration(
            issuer=issuer,
            client_id=doc["client_id"],
            client_secret=secret,
            token_endpoint_auth_method=method,
            redirect_uris=[u for u in registered if isinstance(u, str)]
            if isinstance(registered, list)
            else list(redirect_uris),
            registered_at=now,
            client_secret_expires_at=float(expires) if isinstance(expires, int | float) and expires else None,
        )
    )


async def register_client(
    session: aiohttp.ClientSession,
    endpoint: str,
    request: dict[str, Any],
    issuer: str,
    timeout_s: float = http.DEFAULT_TIMEOUT_S,
) -> Result[ClientRegistration]:
    sent = await http.request(
        session, "POST", endpoint, headers=http.JSON_ACCEPT, json_body=request, timeout_s=timeout_s
    )
    if isinstance(sent, Failure):
        return sent
    result = parse_registration_response(
        sent.value.status, sent.value.json(), issuer, request["redirect_uris"], time.time()
    )
    if isinstance(result, Success):
        # What the response says is what is registered (RFC 7591 §3.2.1): a server may give a secret and another
        # method than we asked for, and the secret then travels the way it says.
        registered, asked = result.value.token_endpoint_auth_method, request.get("token_endpoint_auth_method")
        differs = {"asked_auth_method": asked} if asked != registered else {}
        log.info("client_registered", issuer=issuer, auth_method=registered, **differs)
    else:
        log.warning("client_registration_refused", issuer=issuer, status=sent.value.status)
    return result


def is_loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_IPS


def _without_port(uri: str) -> tuple[str, str | None, str, str]:
    parts = urlsplit(uri)
    return parts.scheme, parts.hostname, parts.path, parts.query


def redirect_fits(registration: ClientRegistration, redirect_uri: str, exact: bool) -> bool:
    """Whether `registration` can be used with `redirect_uri`.

    An exact match always fits. Otherwise, when `exact` is False, a loopback IP redirect that
    differs only in its port fits: RFC 8252 §7.3 says the server must allow any port there (and we
    register as a native app, which servers such as oidc-provider need before they do). A fixed
    `--port` exists for servers that do not, so then only an exact match fits.
    """
    if redirect_uri in registration.redirect_uris:
        return True
    if exact or not is_loopback_redirect(redirect_uri):
        return False
    wanted = _without_port(redirect_uri)
    return any(is_loopback_redirect(u) and _without_port(u) == wanted for u in registration.redirect_uris)


def registered_loopback_port(registration: ClientRegistration) -> int | None:
    """The port of the first loopback redirect we registered: trying it first keeps exact matching."""
    for uri in registration.redirect_uris:
        if is_loopback_redirect(uri):
            port = urlsplit(uri).port
            if port:
                return port
    return None
