"""Servers of the 2025-03-26 revision publish no protected-resource metadata: their origin is the authorization
server, with RFC 8414 metadata at `/.well-known/oauth-authorization-server` or else the default endpoints
`/authorize`, `/token`, `/register`. Everything stays on the server's own origin."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from context_harness.oauth.discovery import discover
from context_harness.primitives.result import ErrorCode, Failure, Success
from tests.oauth_fakes import serve
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

PKCE = {"code_challenge_methods_supported": ["S256"], "response_types_supported": ["code"]}


def legacy_server(metadata: dict[str, Any] | None, *, challenge: str | None = "Bearer") -> web.Application:
    """An MCP server that answers 401 (with `challenge`) and publishes `metadata` (with `{base}` filled in) at
    its origin's RFC 8414 URL, or nothing at all."""
    app = web.Application()

    async def mcp(request: web.Request) -> web.Response:
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        return web.json_response({"error": "invalid_token"}, status=401, headers=headers)

    async def as_metadata(request: web.Request) -> web.Response:
        assert metadata is not None
        base = f"http://{request.host}"
        return web.json_response({k: v.format(base=base) if isinstance(v, str) else v for k, v in metadata.items()})

    app.router.add_post("/v1/mcp", mcp)
    if metadata is not None:
        app.router.add_get("/.well-known/oauth-authorization-server", as_metadata)
    return app


async def test_origin_metadata_is_used_with_an_issuer_under_the_origin() -> None:
    metadata = {
        "issuer": "{base}/oauth",
        "authorization_endpoint": "{base}/oauth/authorize",
        "token_endpoint": "{base}/oauth/token",
        "registration_endpoint": "{base}/oauth/register",
        **PKCE,
    }
    async with serve(legacy_server(metadata)) as base, aiohttp.ClientSession() as session:
        found = await discover(session, base + "/v1/mcp", 5)
    assert isinstance(found, Success), found
    assert found.value.auth_server.token_endpoint == base + "/oauth/token"
    assert found.value.auth_server.registration_endpoint == base + "/oauth/register"
    assert not found.value.default_endpoints
    assert found.value.resource == base + "/v1/mcp"


async def test_no_metadata_at_all_means_the_default_endpoints_at_the_origin() -> None:
    async with serve(legacy_server(None)) as base, aiohttp.ClientSession() as session:
        found = await discover(session, base + "/v1/mcp", 5)
    assert isinstance(found, Success), found
    auth_server = found.value.auth_server
    assert (auth_server.authorization_endpoint, auth_server.token_endpoint, auth_server.registration_endpoint) == (
        base + "/authorize",
        base + "/token",
        base + "/register",
    )
    assert found.value.default_endpoints


async def test_origin_metadata_naming_an_issuer_elsewhere_is_refused() -> None:
    metadata = {
        "issuer": "https://elsewhere.example",
        "authorization_endpoint": "https://elsewhere.example/authorize",
        "token_endpoint": "https://elsewhere.example/token",
        **PKCE,
    }
    async with serve(legacy_server(metadata)) as base, aiohttp.ClientSession() as session:
        found = await discover(session, base + "/v1/mcp", 5)
    assert isinstance(found, Failure) and found.code is ErrorCode.OAUTH_ERROR
    assert "elsewhere.example" in found.error


async def test_a_401_that_asks_for_another_scheme_gets_no_default_endpoints() -> None:
    async with serve(legacy_server(None, challenge='Basic realm="api"')) as base, aiohttp.ClientSession() as session:
        found = await discover(session, base + "/v1/mcp", 5)
    assert isinstance(found, Failure)
    assert "does not ask for a bearer token" in found.error


@pytest.mark.usefixtures("daemon")
def test_an_api_key_server_says_what_to_do_when_its_default_registration_fails(
    user_env: UserEnv, daemon: DaemonProcess, mcp_api_key_server: Any
) -> None:
    """An API-key server answers 401 without a challenge, like a 2025-03-26 server: the login stops at the
    default registration endpoint (404), and the error names the server and what to do."""
    server = mcp_api_key_server()
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "keyed", "--url", server.url, "--bridge").returncode == 0
    done = chctl(user_env, "auth", "keyed", "--no-browser", "--timeout", "10")
    assert done.returncode != 0
    assert "keyed publishes no OAuth metadata" in done.stderr
    assert "chctl add keyed -k KEY" in done.stderr
