"""The token endpoint and revocation (OAuth 2.1, RFC 7009/8707); the authorization request is in
authorization_request.py.

Pure builders and parsers first; the aiohttp calls (`exchange_code`, `refresh_access_token`,
`revoke_token`) are thin wrappers around them.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import quote

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.primitives.oauth import MAX_TOKEN_LIFETIME_S, OAuthTokens
from context_harness.primitives.outside_values import Markers, credential_problem, describe_url
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable

log = structlog.get_logger(__name__)

FORM_HEADERS = {"Accept": "application/json"}
# Errors that mean this grant or client will never work again: only a new login helps.
PERMANENT_GRANT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
# What a person can do about the other errors a token endpoint answers a login with (RFC 6749 §5.2).
TOKEN_ERROR_HINTS = {
    "unsupported_grant_type": "its authorization server takes no browser logins (the authorization-code grant) "
    "from this client: ask the server's operator how its clients sign in",
    "invalid_scope": "run `chctl auth` again with `--scope SCOPE`, a scope the server offers",
    "invalid_request": "the authorization server refused the login's form: run `chctl auth` again, and if it "
    "keeps failing, tell the server's operator",
}
# Statuses that say "not now" rather than "no" (RFC 9110; 5xx are added by range).
TRANSIENT_STATUSES = frozenset({408, 425, 429})


# --- token endpoint: pure ---------------------------------------------------------------------------


def client_authentication(
    client_id: str, client_secret: str | None, auth_method: str | None
) -> tuple[dict[str, str], str | None]:
    """Form fields and an Authorization header value that authenticate the client (RFC 6749 §2.3.1).

    No secret: a public client sends `client_id` in the form. With a secret: HTTP Basic (the
    default for a confidential client) unless the registration says `client_secret_post`. With Basic,
    `client_id` goes in the form too: several servers (the MCP Python SDK's among them) look for it there.
    """
    if not client_secret or auth_method == "none":
        return {"client_id": client_id}, None
    if auth_method == "client_secret_post":
        return {"client_id": client_id, "client_secret": client_secret}, None
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return {"client_id": client_id}, "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _oauth_error(doc: Any) -> tuple[str | None, str]:
    """(`error`, printable message) from an error response body."""
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return None, ""
    error = printable(doc["error"], 64, ascii_only=True)
    description = doc.get("error_description")
    return error, error + (
        f" ({printable(description, SERVER_TEXT_LIMIT, ascii_only=True)})" if isinstance(description, str) else ""
    )


def parse_token_response(status: int, body: bytes | Any, now: float) -> Result[OAuthTokens]:
    """A token endpoint's answer as tokens with an absolute expiry, or a Failure.

    `expires_at = now + expires_in`; without `expires_in` it stays None and the caller treats the
    token as a 1-hour one. A response without `refresh_token` keeps it None: the caller decides
    whether to keep the old one (on refresh it must). Whether the access token may be written into a config
    is `issued_token_problem`'s to say: a token refused after it was issued must be revoked.
    """
    doc = _json(body)
    if status != 200:
        error, message = _oauth_error(doc)
        if error == "invalid_client":
            return Failure(
                f"the authorization server does not know our client: {message}",
                ErrorCode.INVALID_CLIENT,
                "log in again with `chctl auth`",
            )
        if error in PERMANENT_GRANT_ERRORS:
            return Failure(
                f"the authorization server rejected the grant: {message}",
                ErrorCode.INVALID_GRANT,
                "log in again with `chctl auth`",
            )
        if status >= 500 or status in TRANSIENT_STATUSES:
            return Failure(f"the token endpoint failed (HTTP {status})", ErrorCode.NETWORK, "try again shortly")
        return Failure(
            f"the token endpoint refused the request (HTTP {status}{': ' + message if message else ''})",
            ErrorCode.OAUTH_ERROR,
            TOKEN_ERROR_HINTS.get(error or ""),
        )
    if not isinstance(doc, dict):
        return Failure("the token endpoint's answer is not a JSON object", ErrorCode.OAUTH_ERROR)
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        return Failure("the token endpoint's answer has no access_token", ErrorCode.OAUTH_ERROR)
    token_type = doc.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        return Failure(f"unsupported token type {printable(token_type, 32, ascii_only=True)!r}", ErrorCode.OAUTH_ERROR)
    expires_at: float | None = None
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = now + (float(expires_in) if math.isfinite(expires_in) else MAX_TOKEN_LIFETIME_S)
        expires_at = min(expires_at, now + MAX_TOKEN_LIFETIME_S)
    refresh_token = doc.get("refresh_token")
    scope = doc.get("scope")
    id_token = doc.get("id_token")
    return Success(
        OAuthTokens(
            access_token=access_token,
            token_type="Bearer",
            refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
            expires_at=expires_at,
            issued_at=now,
            scope=scope if isinstance(scope, str) else None,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
        )
    )


def issued_token_problem(tokens: OAuthTokens, markers: Markers) -> str | None:
    """Why an issued access token cannot go into an agent's config (it would be read as config syntax, holding
    one of `markers`, or split the request); None when it can. Any visible ASCII passes (RFC 6749 §A.12:
    `userId:grantId:secret` too)."""
    problem = credential_problem(tokens.access_token, markers)
    return f"the token endpoint issued an access token that {problem}" if problem else None


def _json(body: bytes | Any) -> Any:
    if not isinstance(body, bytes | str):
        return body
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


# --- refresh outcomes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The server issued new tokens. `tokens.refresh_token` is None when it did not rotate it: the
    caller must then keep using the refresh token it sent."""

    tokens: OAuthTokens


@dataclass(frozen=True, slots=True)
class TransientError:
    """Not now, maybe later: network error, timeout, 408/425/429, 5xx, a connection closed mid-answer.
    Keep the current token while it is valid and retry with backoff, waiting at least `retry_after`
    seconds when the server said so."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class PermanentError:
    """The server said no for good: `invalid_grant`, `invalid_client` or `unauthorized_client`.
    Retrying will not help; a person must log in again. `code` is INVALID_CLIENT when the server no
    longer knows our client (its registration must be dropped), else INVALID_GRANT (or INVALID_PARAMS
    for a token endpoint URL we cannot even use, OAUTH_ERROR for an access token we cannot write)."""

    code: ErrorCode
    reason: str


RefreshOutcome: TypeAlias = Refreshed | TransientError | PermanentError


def classify_refresh_response(status: int, headers: Mapping[str, str], body: bytes, now: float) -> RefreshOutcome:
    """Only the three OAuth errors that condemn the grant or the client are permanent. Anything else —
    a 404, a redirect, a 401 without a body, an HTML page, another OAuth error, an unusable 200 — may be
    a deployment or proxy hiccup: keep the refresh token and try again later."""
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if status == 200:
        parsed = parse_token_response(status, body, now)
        if isinstance(parsed, Success):
            return Refreshed(parsed.value)
        return TransientError(parsed.error, retry_after)
    error, message = _oauth_error(_json(body))
    if error == "invalid_client":
        reason = f"the authorization server no longer knows our client: {message}"
        return PermanentError(ErrorCode.INVALID_CLIENT, reason)
    if error in PERMANENT_GRANT_ERRORS:
        return PermanentError(ErrorCode.INVALID_GRANT, f"the authorization server rejected the grant: {message}")
    what = message or _describe_body(headers, body)
    return TransientError(f"the token endpoint answered HTTP {status}{': ' + what if what else ''}", retry_after)


def _describe_body(headers: Mapping[str, str], body: bytes) -> str:
    """What a non-OAuth answer was, without echoing it: 'no body', 'an HTML page', 'a redirect to host/path'."""
    location = headers.get("Location")
    if location:
        return f"a redirect to {describe_url(location)}"
    if not body:
        return "no body"
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    return f"a body of type {content_type}" if content_type else "a body that is not an OAuth error"


# --- token endpoint: I/O ------------------------------------------------------------------------------


async def _post_form(
    session: aiohttp.ClientSession,
    endpoint: str,
    form: dict[str, str],
    client_id: str,
    client_secret: str | None,
    auth_method: str | None,
    timeout_s: float,
    connect_timeout_s: float | None = None,
) -> Result[http.HttpResponse]:
    auth_form, auth_header = client_authentication(client_id, client_secret, auth_method)
    return await http.request(
        session,
        "POST",
        endpoint,
        headers=FORM_HEADERS,
        form={**form, **auth_form},
        auth_header=auth_header,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )


async def exchange_code(
    session: aiohttp.ClientSession,
    token_endpoint: str,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str | None = None,
    resource: str | None = None,
    revocation_endpoint: str | None = None,
    timeout_s: float = http.DEFAULT_TIMEOUT_S,
    markers: Markers,
) -> Result[OAuthTokens]:
    """Redeem an authorization code (once) for tokens. Tokens we cannot use (`issued_token_problem`, with the
    agents' substitution `markers`) are revoked at `revocation_endpoint` before the Failure is returned."""
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": redirect_uri}
    if resource:
        form["resource"] = resource
    sent = await _post_form(session, token_endpoint, form, client_id, client_secret, auth_method, timeout_s)
    if isinstance(sent, Failure):
        return sent
    result = parse_token_response(sent.value.status, sent.value.body, time.time())
    if isinstance(result, Failure):
        log.warning("code_exchange_failed", status=sent.value.status, code=result.code.value)
        return result
    problem = issued_token_problem(result.value, markers)
    if problem is not None:
        client = (client_id, client_secret, auth_method)
        fate = await _revoke_unusable(session, revocation_endpoint, result.value, client, timeout_s)
        return Failure(
            f"{problem}; {fate}", ErrorCode.OAUTH_ERROR, "nothing was stored; report this to the server's operator"
        )
    return result


async def refresh_access_token(
    session: aiohttp.ClientSession,
    token_endpoint: str,
    *,
    refresh_token: str,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str | None = None,
    resource: str | None = None,
    scope: str | None = None,
    revocation_endpoint: str | None = None,
    timeout_s: float = http.DEFAULT_TIMEOUT_S,
    connect_timeout_s: float | None = None,
    markers: Markers,
) -> RefreshOutcome:
    """One `grant_type=refresh_token` request, classified for the scheduler. Never raises. New tokens we
    cannot use (`issued_token_problem`, with `markers`) are revoked at `revocation_endpoint` and make a
    PermanentError."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if resource:
        form["resource"] = resource
    if scope:
        form["scope"] = scope
    client = (client_id, client_secret, auth_method)
    sent = await _post_form(session, token_endpoint, form, *client, timeout_s, connect_timeout_s)
    if isinstance(sent, Failure):
        if sent.code is ErrorCode.INVALID_PARAMS:
            return PermanentError(sent.code, sent.error)
        return TransientError(sent.error)
    outcome = classify_refresh_response(sent.value.status, sent.value.headers, sent.value.body, time.time())
    log.info("token_refresh_answered", status=sent.value.status, outcome=type(outcome).__name__)
    problem = issued_token_problem(outcome.tokens, markers) if isinstance(outcome, Refreshed) else None
    if isinstance(outcome, Refreshed) and problem is not None:
        # The same server will issue the same kind of token next time: only a person can sort this out.
        fate = await _revoke_unusable(session, revocation_endpoint, outcome.tokens, client, timeout_s)
        return PermanentError(ErrorCode.OAUTH_ERROR, f"{problem}; {fate}")
    return outcome


async def _revoke_unusable(
    session: aiohttp.ClientSession,
    endpoint: str | None,
    tokens: OAuthTokens,
    client: tuple[str, str | None, str | None],
    timeout_s: float,
) -> str:
    """Revoke tokens just issued that we will not use (a new refresh token first: it revokes the grant), so
    they do not stay live at the server; what became of them, for the error message."""
    if not endpoint:
        return "the server has no revocation endpoint, so it stays valid until it expires"
    client_id, client_secret, auth_method = client
    revoked = True
    for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
        if token:
            result = await revoke_token(
                session,
                endpoint,
                token=token,
                token_type_hint=hint,
                client_id=client_id,
                client_secret=client_secret,
                auth_method=auth_method,
                timeout_s=timeout_s,
            )
            if isinstance(result, Failure) or not result.value:
                revoked = False
                log.warning("unusable_token_not_revoked", token_kind=hint)
    return "it was revoked at the server" if revoked else "revoking it at the server failed"


async def revoke_token(
    session: aiohttp.ClientSession,
    endpoint: str,
    *,
    token: str,
    token_type_hint: str | None = None,
    client_id: str,
    client_secret: str | None = None,
    auth_method: str | None = None,
    timeout_s: float = http.DEFAULT_TIMEOUT_S,
) -> Result[bool]:
    """RFC 7009 revocation. Success(True): revoked (or already invalid — the server says 200 either
    way); Success(False): the server does not revoke this token type.

    A public client refused with `invalid_request` asks once more with an empty `client_secret`: the MCP Python
    SDK's revocation endpoint (FastMCP's) requires the field even from a client registered without a secret,
    and RFC 6749 §2.3.1 lets a client whose secret is empty send it so. Only after that refusal, since another
    server may read an empty secret as a failed authentication; revoking twice is harmless."""
    form = {"token": token}
    if token_type_hint:
        form["token_type_hint"] = token_type_hint
    sent = await _post_form(session, endpoint, form, client_id, client_secret, auth_method, timeout_s)
    if isinstance(sent, Failure):
        return sent
    error, _message = _oauth_error(sent.value.json())
    if sent.value.status == 400 and error == "invalid_request" and not client_secret:
        log.info("revocation_retried_with_empty_secret", hint=token_type_hint)
        form["client_secret"] = ""
        sent = await _post_form(session, endpoint, form, client_id, None, "none", timeout_s)
        if isinstance(sent, Failure):
            return sent
    return revocation_outcome(sent.value, token_type_hint)


def revocation_outcome(answer: http.HttpResponse, token_type_hint: str | None) -> Result[bool]:
    """A revocation endpoint's answer (RFC 7009 §2.2): revoked, a kind of token it does not revoke, or why not
    (INVALID_CLIENT: it refused the client's authentication)."""
    status = answer.status
    if status == 200:
        log.info("token_revoked", hint=token_type_hint)
        return Success(True)
    error, message = _oauth_error(answer.json())
    if error == "unsupported_token_type":
        return Success(False)
    if error == "invalid_client":
        return Failure(f"the revocation endpoint refused the client: {message}", ErrorCode.INVALID_CLIENT)
    if status >= 500 or status in TRANSIENT_STATUSES:
        return Failure(f"the revocation endpoint failed (HTTP {status})", ErrorCode.NETWORK, "try again shortly")
    return Failure(
        f"the revocation endpoint refused the request (HTTP {status}{': ' + message if message else ''})",
        ErrorCode.OAUTH_ERROR,
    )
