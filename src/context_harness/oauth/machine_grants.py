"""Token requests with no person at the browser: the client credentials grant (SEP-1046) and the JWT-bearer grant
with an ID-JAG (RFC 7523 §2.1, SEP-990), each authenticating the client with its secret (HTTP Basic or the form)
or with a signed assertion (`private_key_jwt`, RFC 7523 §2.2).

Their answers are classified like a refresh's (`classify_refresh_response`): only `invalid_grant`,
`invalid_client` and `unauthorized_client` need a person; anything else is tried again later.

Either way of authenticating has a fallback, tried once when the token endpoint answers `invalid_client` (a server
checks the client before the grant, so nothing was spent): a secret goes the other way (`token_auth.either_way`),
and an assertion's audience, the authorization server's issuer at first (RFC 7523bis, the MCP SDKs, the
conformance suite), becomes the token endpoint's URL (what Okta and Entra ID document). The way that worked is
returned, to be stored with the credential.

Revocation (RFC 7009 §2.1) authenticates the client as the token endpoint does: `revoke_signed` sends a fresh
assertion, its audience by the same rule — the issuer, or the URL of the endpoint called (here the revocation
endpoint's), whichever the token endpoint took, then the other, then the token endpoint's URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.oauth.jwts import CLIENT_ASSERTION_TYPE, client_assertion
from context_harness.oauth.token_auth import client_refused, either_way
from context_harness.oauth.token_client import (
    FORM_HEADERS,
    PermanentError,
    Refreshed,
    RefreshOutcome,
    TransientError,
    classify_refresh_response,
    client_authentication,
    issued_token_problem,
    revocation_outcome,
)
from context_harness.primitives.outside_values import Markers
from context_harness.primitives.result import ErrorCode, Failure, Result

log = structlog.get_logger(__name__)

CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRIVATE_KEY_JWT = "private_key_jwt"


@dataclass(frozen=True, slots=True)
class MachineClient:
    """A pre-registered client at one authorization server, and how it proves it is that client."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    # client_secret_basic / client_secret_post (with a secret), private_key_jwt (with a key), none
    auth_method: str | None = None
    private_key: str | None = field(default=None, repr=False)
    signing_alg: str | None = None
    # The assertion's `aud`: the issuer first; `assertion_audiences` lists what to try, in order.
    issuer: str = ""
    token_endpoint: str = ""
    audience: str | None = None

    def assertion_audiences(self) -> list[str]:
        """The one that worked last first; then the issuer, then the token endpoint."""
        return list(dict.fromkeys(a for a in (self.audience, self.issuer, self.token_endpoint) if a))


Outcome = TypeVar("Outcome")
# How a token endpoint's answer reads: (status, headers, body, now) -> an outcome.
Classifier = Callable[[int, Mapping[str, str], bytes, float], Outcome]


@dataclass(frozen=True, slots=True)
class Granted(Generic[Outcome]):
    """The outcome of one grant, and the client as it turned out to authenticate (to store when it worked)."""

    outcome: Outcome
    client: MachineClient


def _authentication(client: MachineClient, audience: str) -> tuple[dict[str, str], str | None]:
    """Form fields and an Authorization header that authenticate `client`."""
    if client.auth_method == PRIVATE_KEY_JWT and client.private_key and client.signing_alg:
        assertion = client_assertion(client.client_id, audience, client.private_key, client.signing_alg)
        # No client_id: the assertion's `sub` names the client (RFC 7523 §3, the client credentials extension).
        return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}, None
    return client_authentication(client.client_id, client.client_secret, client.auth_method)


def classify_token_answer(
    status: int, headers: Mapping[str, str], body: bytes, now: float, *, markers: Markers
) -> RefreshOutcome:
    """A grant's answer, as a refresh's; an access token no config may hold (`markers`: the agents' substitution
    syntax) is refused like a grant. A `Classifier` once its markers are given (`functools.partial`)."""
    outcome = classify_refresh_response(status, headers, body, now)
    problem = issued_token_problem(outcome.tokens, markers) if isinstance(outcome, Refreshed) else None
    if problem is not None:  # the same server would issue the same kind of token again
        return PermanentError(ErrorCode.OAUTH_ERROR, f"{problem}; it was not stored and expires by itself")
    return outcome


async def _grant_once(
    session: aiohttp.ClientSession,
    client: MachineClient,
    form: dict[str, str],
    audience: str,
    timeout_s: float,
    classify: Classifier[Outcome],
) -> Outcome | TransientError | PermanentError:
    auth_form, auth_header = _authentication(client, audience)
    sent = await http.request(
        session,
        "POST",
        client.token_endpoint,
        headers=FORM_HEADERS,
        form={**form, **auth_form},
        auth_header=auth_header,
        timeout_s=timeout_s,
    )
    if isinstance(sent, Failure):
        if sent.code is ErrorCode.INVALID_PARAMS:
            return PermanentError(sent.code, sent.error)
        return TransientError(sent.error)
    outcome = classify(sent.value.status, sent.value.headers, sent.value.body, time.time())
    log.info("grant_answered", grant=form["grant_type"], status=sent.value.status, outcome=type(outcome).__name__)
    return outcome


async def request_token(
    session: aiohttp.ClientSession,
    client: MachineClient,
    form: dict[str, str],
    timeout_s: float,
    classify: Classifier[Outcome],
) -> Granted[Outcome | TransientError | PermanentError]:
    """One grant (`form` holds `grant_type` and its parameters), with the fallback of the module's docstring."""
    if client.auth_method == PRIVATE_KEY_JWT:
        audiences = client.assertion_audiences()
        for audience in audiences[:-1]:
            outcome = await _grant_once(session, client, form, audience, timeout_s, classify)
            if not client_refused(outcome):
                return Granted(outcome, replace(client, audience=audience))
            log.info("assertion_audience_retried", grant=form["grant_type"])
        last = await _grant_once(session, client, form, audiences[-1], timeout_s, classify)
        return Granted(last, replace(client, audience=audiences[-1]))

    async def attempt(method: str | None) -> Outcome | TransientError | PermanentError:
        return await _grant_once(session, replace(client, auth_method=method), form, "", timeout_s, classify)

    outcome, method = await either_way(attempt, client.auth_method, client.client_secret, grant=form["grant_type"])
    return Granted(outcome, replace(client, auth_method=method))


def revocation_audiences(client: MachineClient, endpoint: str) -> list[str]:
    """The token endpoint's rule for the assertion's `aud`, at the revocation endpoint `endpoint`."""
    called = [endpoint, client.token_endpoint]
    first = [client.issuer] if client.audience in (None, client.issuer) else called
    return list(dict.fromkeys(a for a in (*first, client.issuer, *called) if a))


async def revoke_signed(
    session: aiohttp.ClientSession,
    client: MachineClient,
    endpoint: str,
    token: str,
    token_type_hint: str,
    timeout_s: float,
) -> Result[bool]:
    """RFC 7009 revocation by a `private_key_jwt` client: as `token_client.revoke_token`, the client proved by a
    fresh assertion per request; another audience tried when the endpoint refuses the client."""
    outcome: Result[bool] = Failure("no audience to sign for", ErrorCode.INVALID_PARAMS)
    for audience in revocation_audiences(client, endpoint):
        auth_form, _ = _authentication(client, audience)
        form = {"token": token, "token_type_hint": token_type_hint, **auth_form}
        sent = await http.request(session, "POST", endpoint, headers=FORM_HEADERS, form=form, timeout_s=timeout_s)
        if isinstance(sent, Failure):
            return sent
        outcome = revocation_outcome(sent.value, token_type_hint)
        if not client_refused(outcome):
            return outcome
        log.info("assertion_audience_retried", grant="revocation")
    return outcome


def client_credentials_form(resource: str | None, scopes: list[str] | None) -> dict[str, str]:
    form = {"grant_type": CLIENT_CREDENTIALS}
    if resource:
        form["resource"] = resource
    if scopes:
        form["scope"] = " ".join(scopes)
    return form


def jwt_bearer_form(assertion: str, resource: str | None, scopes: list[str] | None) -> dict[str, str]:
    form = {"grant_type": JWT_BEARER, "assertion": assertion}
    if resource:
        form["resource"] = resource
    if scopes:
        form["scope"] = " ".join(scopes)
    return form
