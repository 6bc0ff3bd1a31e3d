"""run_authorization_flow end to end: real oidc-provider, real MCP SDK resource server, fake browser.

Needs the peer plugins: pytest -p tests.peers.oidc -p tests.peers.mcp_servers tests/test_oauth_flow_e2e.py
"""

import asyncio
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from context_harness.config.format import substitutions
from context_harness.oauth.discovery import initialize_request
from context_harness.oauth.flow import FlowRequest, run_authorization_flow
from context_harness.oauth.http import new_session
from context_harness.oauth.token_client import Refreshed, refresh_access_token, revoke_token
from context_harness.primitives.result import Success
from context_harness.stores.client_store import ClientStore
from tests.peers.fake_browser import complete_consent
from tests.peers.mcp_servers import McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory


async def mcp_initialize_status(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http, http.post(url, json=initialize_request(), headers=headers) as resp:
        return resp.status


@pytest.fixture(params=["default", "stock-offline-access"])
def peers(
    request: pytest.FixtureRequest,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
) -> tuple[OidcProvider, McpOAuthServer]:
    """The default provider, and one that (like stock oidc-provider) issues a refresh token for
    offline_access only with prompt=consent: our authorization URL must say so."""
    provider = oidc_provider_factory(offline_access_needs_prompt_consent=request.param != "default")
    return provider, mcp_oauth_server_factory(provider)


async def test_login_refresh_and_revoke_against_real_peers(
    peers: tuple[OidcProvider, McpOAuthServer], tmp_path: Path
) -> None:
    oidc_provider, mcp_oauth_server = peers
    browser_tasks: list[asyncio.Task[int]] = []

    async def user_consents(url: str) -> int:
        redirect = await complete_consent(url)
        async with aiohttp.ClientSession() as http, http.get(redirect) as resp:
            await resp.read()
            return resp.status

    store = ClientStore(tmp_path / "clients")
    async with new_session() as session:
        with capture_logs() as logs:
            result = await run_authorization_flow(
                session,
                FlowRequest(server_name="e2e", server_url=mcp_oauth_server.url, markers=substitutions(), timeout_s=60),
                client_store=store,
                on_authorization_url=lambda url: browser_tasks.append(asyncio.create_task(user_consents(url))),
            )
        assert isinstance(result, Success), result
        assert await asyncio.wait_for(browser_tasks[0], 10) == 200
        grant = result.value
        tokens = grant.tokens
        assert grant.issuer == oidc_provider.issuer
        assert grant.resource == mcp_oauth_server.resource
        assert "offline_access" in grant.scopes and tokens.refresh_token is not None
        assert store.get("e2e", oidc_provider.issuer) is not None  # DCR happened and was kept

        # The resource server accepts the token; the authorization server says it is for this resource.
        introspection = await oidc_provider.introspect(tokens.access_token)
        assert introspection["active"] is True and introspection["aud"] == mcp_oauth_server.resource
        assert await mcp_initialize_status(mcp_oauth_server.url, tokens.access_token) == 200

        # Refresh rotates the refresh token; the new access token works too.
        outcome = await refresh_access_token(
            session,
            grant.token_endpoint,
            refresh_token=tokens.refresh_token,
            client_id=grant.client_id,
            resource=grant.resource,
            markers=substitutions(),
        )
        assert isinstance(outcome, Refreshed)
        new = outcome.tokens
        assert new.refresh_token and new.refresh_token != tokens.refresh_token
        assert await mcp_initialize_status(mcp_oauth_server.url, new.access_token) == 200

        # Logout: revoking the refresh token ends the grant.
        assert grant.revocation_endpoint is not None
        revoked = await revoke_token(
            session,
            grant.revocation_endpoint,
            token=new.refresh_token,
            token_type_hint="refresh_token",
            client_id=grant.client_id,
        )
        assert revoked == Success(True)
        assert not await oidc_provider.is_active(new.refresh_token)

    for secret in (tokens.access_token, tokens.refresh_token, new.access_token, new.refresh_token):
        assert secret not in repr(logs)
