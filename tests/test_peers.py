"""The real peers the suite runs against behave like the deployments they stand in for.

Run alone with: pytest -p tests.peers.oidc -p tests.peers.mcp_servers tests/test_peers.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import TextContent
from pydantic import AnyUrl

from tests.peers import manual_oauth
from tests.peers.fake_browser import browser_command, complete_consent
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test-peers", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(force_close=True))


async def _get_json(url: str) -> dict[str, Any]:
    async with _http() as http, http.get(url) as response:
        assert response.status == 200, url
        body: dict[str, Any] = await response.json()
        return body


async def _post_initialize(url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    async with _http() as http, http.post(url, json=INITIALIZE, headers=MCP_HEADERS | headers) as response:
        await response.read()
        return response


async def _call_tool(url: str, headers: dict[str, str], name: str, arguments: dict[str, Any]) -> str:
    """Call a tool through the MCP SDK's own streamable HTTP client with the given headers."""
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


# --- discovery ---------------------------------------------------------------------------------


async def test_authorization_server_metadata_is_what_an_mcp_client_needs(oidc_provider: OidcProvider) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = await _get_json(oidc_provider.issuer + path)
        assert metadata["issuer"] == oidc_provider.issuer
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["authorization_response_iss_parameter_supported"] is True
        assert metadata["registration_endpoint"] == oidc_provider.registration_endpoint
        assert metadata["introspection_endpoint"] == oidc_provider.introspection_endpoint
        assert metadata["revocation_endpoint"] == oidc_provider.revocation_endpoint
        assert metadata["token_endpoint"] == oidc_provider.token_endpoint
        assert "refresh_token" in metadata["grant_types_supported"]
        assert {"offline_access", "mcp:read", "mcp:write"} <= set(metadata["scopes_supported"])


async def test_unauthenticated_mcp_request_gets_401_pointing_at_resource_metadata(
    mcp_oauth_server: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    response = await _post_initialize(mcp_oauth_server.url, {})
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{mcp_oauth_server.resource_metadata_url}"' in challenge

    metadata = await _get_json(mcp_oauth_server.resource_metadata_url)
    assert metadata["resource"] == mcp_oauth_server.url == mcp_oauth_server.resource
    assert metadata["authorization_servers"] == [oidc_provider.issuer]
    assert metadata["scopes_supported"] == ["mcp:read", "mcp:write"]


# --- registration and the authorization code flow ------------------------------------------------


async def test_dynamic_registration_of_a_native_client_allows_any_loopback_port(oidc_provider: OidcProvider) -> None:
    client_id = await manual_oauth.register_native_client(oidc_provider)
    authorization = await manual_oauth.authorize(
        oidc_provider,
        resource="http://127.0.0.1:1/mcp",
        client_id=client_id,
        redirect_uri="http://127.0.0.1:49152/callback",
    )
    assert authorization.redirect_url.startswith("http://127.0.0.1:49152/callback?")
    assert "code" in authorization.params


async def test_registration_rejects_a_scope_the_server_does_not_list(oidc_provider: OidcProvider) -> None:
    with pytest.raises(AssertionError, match="invalid_client_metadata|invalid_scope"):
        await manual_oauth.register_native_client(oidc_provider, scope="mcp:read admin:everything")


@pytest.mark.parametrize(
    "pkce", ["", "&code_challenge=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG&code_challenge_method=plain"]
)
async def test_authorization_requires_pkce_s256(oidc_provider: OidcProvider, pkce: str) -> None:
    query = f"response_type=code&client_id={oidc_provider.public_client_id}"
    query += f"&redirect_uri=http://127.0.0.1:5/callback&scope=mcp:read&state=s{pkce}"
    async with _http() as http, http.get(f"{oidc_provider.issuer}/auth?{query}", allow_redirects=False) as response:
        location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:5/callback?")
    assert "error=invalid_request" in location
    assert "code=" not in location


async def test_full_flow_yields_tokens_that_the_mcp_server_accepts(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    authorization = await manual_oauth.authorize(oidc_provider, resource=mcp_oauth_server.resource)
    # RFC 9207: oidc-provider puts `iss` on every code response.
    assert authorization.params["iss"] == oidc_provider.issuer
    assert authorization.params["state"] == authorization.state

    status, tokens = await manual_oauth.redeem(oidc_provider, authorization, resource=mcp_oauth_server.resource)
    assert status == 200, tokens.get("error")
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert "refresh_token" in set(tokens)  # offline_access was asked for, no prompt=consent needed
    # `scope` is the access token's: the resource's scopes only, never offline_access.
    assert set(tokens["scope"].split()) == {"mcp:read", "mcp:write"}
    opaque = tokens["access_token"].count(".") == 0
    assert opaque, "access token is a JWT; the resource server is meant to introspect"

    claims = await oidc_provider.introspect(tokens["access_token"])
    assert claims["active"] is True
    assert claims["aud"] == mcp_oauth_server.resource
    assert claims["sub"] == "alice"

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert await _call_tool(mcp_oauth_server.url, bearer, "echo", {"text": "hello"}) == "hello"
    assert await _call_tool(mcp_oauth_server.url, bearer, "whoami", {}) == "alice"


async def test_code_is_redeemed_once(oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer) -> None:
    authorization = await manual_oauth.authorize(oidc_provider, resource=mcp_oauth_server.resource)
    first, _ = await manual_oauth.redeem(oidc_provider, authorization, resource=mcp_oauth_server.resource)
    second, body = await manual_oauth.redeem(oidc_provider, authorization, resource=mcp_oauth_server.resource)
    assert (first, second, body["error"]) == (200, 400, "invalid_grant")


async def test_no_refresh_token_without_offline_access(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    tokens = await manual_oauth.obtain_tokens(
        oidc_provider, resource=mcp_oauth_server.resource, scope="mcp:read mcp:write"
    )
    assert "refresh_token" not in set(tokens)


async def test_stock_offline_access_policy_needs_prompt_consent(oidc_provider_factory: OidcProviderFactory) -> None:
    provider = oidc_provider_factory(offline_access_needs_prompt_consent=True)
    tokens = await manual_oauth.obtain_tokens(provider, resource="http://127.0.0.1:1/mcp")
    assert "refresh_token" not in set(tokens)


async def test_unknown_resource_is_invalid_target(oidc_provider: OidcProvider) -> None:
    authorization = await manual_oauth.authorize(oidc_provider, resource="https://elsewhere.example/mcp")
    assert authorization.params["error"] == "invalid_target"


async def test_token_for_another_resource_is_rejected_by_the_mcp_server(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    tokens = await manual_oauth.obtain_tokens(oidc_provider, resource="http://127.0.0.1:1/other")
    assert (await oidc_provider.introspect(tokens["access_token"]))["active"] is True
    response = await _post_initialize(mcp_oauth_server.url, {"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status == 401


async def test_denied_consent_redirects_with_access_denied(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    authorization = await manual_oauth.authorize(oidc_provider, resource=mcp_oauth_server.resource, deny=True)
    assert authorization.params["error"] == "access_denied"
    assert authorization.params["state"] == authorization.state
    assert authorization.params["iss"] == oidc_provider.issuer
    assert "code" not in authorization.params


class _MemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_sdk_reference_oauth_client_completes_the_flow_against_the_peers(
    mcp_oauth_server: McpOAuthServer,
) -> None:
    """The bench compares our flow with this one, so it must work against these peers as they are."""
    redirects: list[str] = []

    async def open_browser(authorization_url: str) -> None:
        redirects.append(await complete_consent(authorization_url))

    async def read_callback() -> AuthorizationCodeResult:
        params = {key: values[0] for key, values in parse_qs(urlsplit(redirects[-1]).query).items()}
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    storage = _MemoryTokenStorage()
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl("http://127.0.0.1:53999/callback")],
        grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none",
        client_name="mcp-sdk",
    )
    auth = OAuthClientProvider(mcp_oauth_server.url, metadata, storage, open_browser, read_callback)
    async with (
        create_mcp_http_client(auth=auth) as http,
        Client(streamable_http_client(mcp_oauth_server.url, http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert isinstance(result.content[0], TextContent) and result.content[0].text == "alice"
    assert storage.client is not None  # registered dynamically
    assert storage.tokens is not None and storage.tokens.refresh_token is not None


# --- refresh, rotation, expiry, revocation ------------------------------------------------------


async def test_refresh_rotates_and_the_old_refresh_token_dies(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    resource = mcp_oauth_server.resource
    first = await manual_oauth.obtain_tokens(oidc_provider, resource=resource)

    status, second = await manual_oauth.refresh(oidc_provider, first["refresh_token"])
    assert status == 200, second.get("error")
    rotated = second["refresh_token"] != first["refresh_token"]
    renewed = second["access_token"] != first["access_token"]
    assert rotated and renewed
    # A refresh without `resource` keeps the granted audience, so the new token still works here.
    assert (await oidc_provider.introspect(second["access_token"]))["aud"] == resource
    assert (await oidc_provider.introspect(first["refresh_token"]))["active"] is False
    assert (await oidc_provider.introspect(second["refresh_token"]))["active"] is True

    status, body = await manual_oauth.refresh(oidc_provider, second["refresh_token"], resource=resource)
    assert status == 200, body.get("error")

    # Replaying a rotated refresh token is invalid_grant, and (reuse detection) revokes the grant.
    status, replay = await manual_oauth.refresh(oidc_provider, first["refresh_token"])
    assert (status, replay["error"]) == (400, "invalid_grant")
    assert (await oidc_provider.introspect(body["refresh_token"]))["active"] is False


async def test_without_rotation_the_refresh_token_is_kept(
    oidc_provider_factory: OidcProviderFactory,
) -> None:
    provider = oidc_provider_factory(rotate_refresh_token=False)
    first = await manual_oauth.obtain_tokens(provider, resource="http://127.0.0.1:1/mcp")
    for _ in range(2):
        status, body = await manual_oauth.refresh(provider, first["refresh_token"])
        assert status == 200, body.get("error")
        kept = body.get("refresh_token", first["refresh_token"]) == first["refresh_token"]
        assert kept, "the refresh token changed although rotation is off"


async def test_short_ttl_tokens_expire_and_the_mcp_server_then_refuses_them(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> None:
    provider = oidc_provider_factory(access_token_ttl=2)
    server = mcp_oauth_server_factory(provider)
    tokens = await manual_oauth.obtain_tokens(provider, resource=server.resource)
    assert tokens["expires_in"] == 2
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await _post_initialize(server.url, bearer)).status == 200

    deadline = time.monotonic() + 10
    while await provider.is_active(tokens["access_token"]):
        assert time.monotonic() < deadline, "token still active long after its TTL"
        await asyncio.sleep(0.25)
    assert (await _post_initialize(server.url, bearer)).status == 401

    status, renewed = await manual_oauth.refresh(provider, tokens["refresh_token"])
    assert status == 200 and renewed["expires_in"] == 2
    assert await provider.is_active(renewed["access_token"])


async def test_revoking_the_refresh_token_makes_the_next_refresh_invalid_grant(
    oidc_provider: OidcProvider, mcp_oauth_server: McpOAuthServer
) -> None:
    tokens = await manual_oauth.obtain_tokens(oidc_provider, resource=mcp_oauth_server.resource)
    await oidc_provider.revoke(tokens["refresh_token"], "refresh_token")
    status, body = await manual_oauth.refresh(oidc_provider, tokens["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert not await oidc_provider.is_active(tokens["access_token"])  # the grant went with it


# --- API-key server -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_api_key_server_accepts_only_the_right_key(
    mcp_api_key_server: McpApiKeyServerFactory, header: str
) -> None:
    server = mcp_api_key_server(header=header)
    assert (await _post_initialize(server.url, {})).status == 401
    wrong = {header: "Bearer wrong" if header == "Authorization" else "wrong"}
    rejected = await _post_initialize(server.url, wrong)
    assert rejected.status == 401
    assert "WWW-Authenticate" not in rejected.headers  # no OAuth challenge: clients must not start a flow
    assert await _call_tool(server.url, server.headers, "echo", {"text": "ok"}) == "ok"


# --- the fake browser as Python's webbrowser opens it ----------------------------------------------


async def test_webbrowser_with_fake_browser_delivers_the_redirect_to_the_callback(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    received: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def callback(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.put_nowait(dict(request.query))
        return aiohttp.web.Response(text="done")

    app = aiohttp.web.Application()
    app.router.add_get("/callback", callback)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        authorization_url = _authorization_url(oidc_provider, f"http://127.0.0.1:{port}/callback")
        log = tmp_path / "browser.log"
        # webbrowser.open in a child process, exactly as chctl would call it.
        opener = [sys.executable, "-c", "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 3)"]
        env = os.environ | {"BROWSER": browser_command(), "FAKE_BROWSER_LOG": str(log)}
        opened = await asyncio.to_thread(subprocess.run, [*opener, authorization_url], env=env, timeout=30)
        assert opened.returncode == 0
        params = await asyncio.wait_for(received.get(), timeout=30)
        assert params["iss"] == oidc_provider.issuer and "code" in params
        deadline = time.monotonic() + 10
        while not log.exists() or not log.read_text():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        record = json.loads(log.read_text().splitlines()[0])
        assert record | {"pid": 0} == {"error": None, "params": ["code", "iss", "state"], "status": 200, "pid": 0}
        await _wait_for_exit(record["pid"])  # the browser ran detached: make sure it is gone
    finally:
        await runner.cleanup()


async def _wait_for_exit(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _running(pid):
        assert time.monotonic() < deadline, "fake browser did not exit"
        await asyncio.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "(zombie)" not in status


def _authorization_url(provider: OidcProvider, redirect_uri: str) -> str:
    _, challenge = manual_oauth.pkce_pair()
    query = {
        "response_type": "code",
        "client_id": provider.public_client_id,
        "redirect_uri": redirect_uri,
        "scope": "mcp:read",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": "http://127.0.0.1:1/mcp",
    }
    return f"{provider.issuer}/auth?{urlencode(query)}"
