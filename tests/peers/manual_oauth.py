"""OAuth done by hand against the oidc-provider peer, independent of the product's OAuth code.

For proving the peers work and for seeding tokens in tests that exercise something else (the
refresher, the config writer): authorization code + PKCE S256 + resource, consent by fake_browser.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

from tests.peers.fake_browser import complete_consent
from tests.peers.oidc import OidcProvider

# Nothing listens here: complete_consent hands back the redirect without fetching it. Any port is
# accepted for native clients' loopback redirects.
REDIRECT_URI = "http://127.0.0.1:53682/callback"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class AuthorizationResponse:
    redirect_url: str  # what the authorization server redirected the browser to
    params: dict[str, str]  # its query parameters (code, state, iss or error, ...)
    state: str  # the state we sent
    code_verifier: str


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(force_close=True))


async def register_native_client(provider: OidcProvider, scope: str = "mcp:read mcp:write offline_access") -> str:
    """RFC 7591 registration of a public native client with a loopback redirect; returns client_id."""
    metadata = {
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": ["http://127.0.0.1/callback"],
        "client_name": "test-peers",
        "scope": scope,
    }
    async with _http() as http, http.post(provider.registration_endpoint, json=metadata) as response:
        body: dict[str, Any] = await response.json()
        if response.status != 201:
            raise AssertionError(f"registration refused: {response.status} {body.get('error')}")
        return str(body["client_id"])


async def authorize(
    provider: OidcProvider,
    *,
    resource: str,
    scope: str = "mcp:read mcp:write offline_access",
    client_id: str | None = None,
    deny: bool = False,
    redirect_uri: str = REDIRECT_URI,
) -> AuthorizationResponse:
    """Send the browser through the authorization endpoint and return where it ended up."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": client_id or provider.public_client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
    }
    redirect = await complete_consent(f"{provider.issuer}/auth?{urlencode(query)}", deny=deny)
    params = {key: values[0] for key, values in parse_qs(urlsplit(redirect).query).items()}
    return AuthorizationResponse(redirect, params, state, verifier)


async def token_request(provider: OidcProvider, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST to the token endpoint; returns (status, JSON body) whatever the outcome."""
    async with _http() as http, http.post(provider.token_endpoint, data=form) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def redeem(
    provider: OidcProvider,
    authorization: AuthorizationResponse,
    *,
    resource: str,
    client_id: str | None = None,
    redirect_uri: str = REDIRECT_URI,
) -> tuple[int, dict[str, Any]]:
    return await token_request(
        provider,
        {
            "grant_type": "authorization_code",
            "code": authorization.params["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id or provider.public_client_id,
            "code_verifier": authorization.code_verifier,
            "resource": resource,
        },
    )


async def refresh(
    provider: OidcProvider, refresh_token: str, *, client_id: str | None = None, resource: str | None = None
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id or provider.public_client_id,
    }
    if resource is not None:
        form["resource"] = resource
    return await token_request(provider, form)


async def obtain_tokens(
    provider: OidcProvider,
    *,
    resource: str,
    scope: str = "mcp:read mcp:write offline_access",
    client_id: str | None = None,
) -> dict[str, Any]:
    """The whole flow: consent, then the code redeemed. Returns the token response."""
    authorization = await authorize(provider, resource=resource, scope=scope, client_id=client_id)
    if authorization.params.get("state") != authorization.state or "code" not in authorization.params:
        raise AssertionError(f"authorization failed: {authorization.params.get('error')}")
    status, body = await redeem(provider, authorization, resource=resource, client_id=client_id)
    if status != 200:
        raise AssertionError(f"token request failed: {status} {body.get('error')}")
    return body
