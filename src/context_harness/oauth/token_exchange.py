"""The token exchange at the identity provider (RFC 8693, SEP-990 §4): the user's ID token in, an Identity
Assertion JWT Authorization Grant (ID-JAG) for one MCP server's authorization server out.

Pure builders and parsers first; `exchange_for_id_jag` is the thin I/O around them. The answer is classified like
a refresh: `invalid_grant` (the IdP does not accept the ID token, or its policy refuses this server) and the
client errors need a person; anything else is tried again later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.oauth.machine_grants import MachineClient, request_token
from context_harness.oauth.token_client import PermanentError, Refreshed, TransientError, classify_refresh_response

log = structlog.get_logger(__name__)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


def exchange_form(id_token: str, audience: str, resource: str, scopes: list[str] | None) -> dict[str, str]:
    """The exchange request: `audience` is the MCP server's authorization server (its issuer), `resource` the
    MCP server (its RFC 9728 resource)."""
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "requested_token_type": ID_JAG,
        "audience": audience,
        "resource": resource,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN,
    }
    if scopes:
        form["scope"] = " ".join(scopes)
    return form


@dataclass(frozen=True, slots=True)
class IdJag:
    """The grant the IdP issued (a JWT for the authorization server; never shown or logged)."""

    assertion: str


ExchangeOutcome: TypeAlias = IdJag | TransientError | PermanentError


def parse_exchange_body(doc: Any) -> str | None:
    """The ID-JAG of a 200 answer, or None when it holds none (`issued_token_type`, if given, must say id-jag:
    RFC 8693 §2.2.1; `token_type` is `N_A`, so a refresh's parser, which wants `Bearer`, does not fit)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str) or not doc["access_token"]:
        return None
    if doc.get("issued_token_type") not in (ID_JAG, None):
        return None
    return str(doc["access_token"])


def classify_exchange_answer(status: int, headers: Mapping[str, str], body: bytes, now: float) -> ExchangeOutcome:
    """An exchange's answer: the ID-JAG, or an error classified as a refresh's is."""
    if status != 200:
        outcome = classify_refresh_response(status, headers, body, now)
        assert not isinstance(outcome, Refreshed)
        return outcome
    assertion = parse_exchange_body(http.HttpResponse(status, headers, body).json())
    if assertion is None:
        return TransientError("the identity provider's answer holds no ID-JAG (issued_token_type id-jag)")
    return IdJag(assertion)


async def exchange_for_id_jag(
    session: aiohttp.ClientSession, idp: MachineClient, form: dict[str, str], timeout_s: float
) -> ExchangeOutcome:
    """One token exchange at the IdP's token endpoint, with the IdP client's authentication."""
    granted = await request_token(session, idp, form, timeout_s, classify_exchange_answer)
    return granted.outcome
