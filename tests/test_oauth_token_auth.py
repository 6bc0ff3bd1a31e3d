"""The one retry with the other way of sending the client secret (oauth/token_auth.py), against scripted
token endpoints: only `invalid_client` is retried, once, and the caller learns which way worked. (The code
exchange takes the same path: tests/test_oauth_flow.py.) And logout's revocation sends the secret the way the
token endpoint took it, to a FastMCP-like endpoint that answers 400 otherwise."""

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from context_harness.config.format import substitutions
from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings
from context_harness.oauth.http import new_session
from context_harness.oauth.token_auth import either_way, other_secret_method
from context_harness.oauth.token_client import PermanentError, Refreshed, RefreshOutcome, refresh_access_token
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.primitives.result import ErrorCode, Success
from tests.oauth_fakes import ScriptedTokenEndpoint, respond, serve

INVALID_CLIENT = respond(401, {"error": "invalid_client"})
CLIENT_SECRET = "client-SECRET"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as s:
        yield s


async def refresh(
    session: aiohttp.ClientSession, endpoint: ScriptedTokenEndpoint, method: str | None
) -> tuple[RefreshOutcome, str | None]:
    async with serve(endpoint.app()) as base:
        return await either_way(
            lambda chosen: refresh_access_token(
                session,
                base + "/token",
                refresh_token="R1",
                client_id="client-1",
                client_secret=CLIENT_SECRET,
                auth_method=chosen,
                markers=substitutions(),
            ),
            method,
            CLIENT_SECRET,
            grant="refresh_token",
        )


def test_the_other_way_exists_only_for_a_secret_sent_by_basic_or_in_the_form() -> None:
    assert other_secret_method("client_secret_basic", "s") == "client_secret_post"
    assert other_secret_method(None, "s") == "client_secret_post"  # no method: Basic was sent
    assert other_secret_method("client_secret_post", "s") == "client_secret_basic"
    assert other_secret_method("none", "s") is None and other_secret_method("private_key_jwt", "s") is None
    assert other_secret_method("client_secret_basic", None) is None


async def test_invalid_client_with_basic_is_retried_once_in_the_form(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([INVALID_CLIENT, respond(200, {"access_token": "A2"})])
    outcome, method = await refresh(session, endpoint, "client_secret_basic")
    assert isinstance(outcome, Refreshed) and method == "client_secret_post"
    assert endpoint.auth_headers[0] is not None and "client_secret" not in endpoint.forms[0]
    assert endpoint.auth_headers[1] is None and endpoint.forms[1]["client_secret"] == CLIENT_SECRET


async def test_refused_both_ways_is_invalid_client_after_two_requests(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([INVALID_CLIENT])
    outcome, _ = await refresh(session, endpoint, "client_secret_post")
    assert isinstance(outcome, PermanentError) and outcome.code is ErrorCode.INVALID_CLIENT
    assert len(endpoint.forms) == 2


@pytest.mark.parametrize("error", ["invalid_grant", "unauthorized_client"])
async def test_any_other_refusal_is_never_retried(session: aiohttp.ClientSession, error: str) -> None:
    endpoint = ScriptedTokenEndpoint([respond(400, {"error": error}), respond(200, {"access_token": "A2"})])
    outcome, method = await refresh(session, endpoint, "client_secret_basic")
    assert isinstance(outcome, PermanentError) and method == "client_secret_basic"
    assert len(endpoint.forms) == 1  # a refresh token sent twice looks like a replay


# --- logout: revocation authenticates the client as the token endpoint did ------------------------------


async def fastmcp_revocation(request: web.Request) -> web.StreamResponse:
    """FastMCP's revocation endpoint: the secret in the form or 400 (Basic does not count)."""
    form = await request.post()
    if form.get("client_id") != "client-1" or form.get("client_secret") != CLIENT_SECRET:
        return web.json_response(
            {"error": "invalid_request", "error_description": "client_secret required"}, status=400
        )
    return web.Response(status=200)


async def test_logout_of_a_confidential_client_revokes_both_tokens_with_its_secret(tmp_path: Path) -> None:
    endpoint = ScriptedTokenEndpoint([fastmcp_revocation])
    services = build_services(Settings(home=tmp_path / "ch"))
    try:
        async with serve(endpoint.app()) as base:
            services.tokens.save(
                Credential(
                    name="srv",
                    kind="oauth",
                    state=TokenState.ACTIVE,
                    tokens=OAuthTokens(access_token="A1-SECRET", refresh_token="R1-SECRET"),
                    issuer=base,
                    token_endpoint=base + "/token",
                    revocation_endpoint=base + "/revoke",
                    client_id="client-1",
                    client_secret=CLIENT_SECRET,
                    token_endpoint_auth_method="client_secret_post",
                )
            )
            result = await services.oauth.logout("srv")
    finally:
        await services.close()
    assert isinstance(result, Success) and result.value["revoked"] is True, result
    assert [form["token"] for form in endpoint.forms] == ["R1-SECRET", "A1-SECRET"]  # the grant first
    assert endpoint.auth_headers == [None, None]
