"""`oauth.auth_probe`: what a server added by URL asks for, from its answer to an `initialize` without
credentials — against small aiohttp servers for the shapes the MCP SDK peers do not take (the SDK's own OAuth
and API-key servers are asked end to end in tests/test_newcomer_traps.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import pytest
from aiohttp import web

from context_harness.oauth.auth_probe import auth_wanted, verdict
from context_harness.primitives.mcp import MCPAuthType
from tests.oauth_fakes import serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def serving(routes: dict[str, Handler]) -> AbstractAsyncContextManager[str]:
    """A server with `routes` (path -> handler for any method); its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    return serve(app)


def answer(status: int, challenge: str | None = None) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        return web.json_response({"error": "unauthorized"} if status == 401 else {}, status=status, headers=headers)

    return handler


METADATA = {"resource": "x", "authorization_servers": ["https://as.example.com"]}


async def metadata(_request: web.Request) -> web.StreamResponse:
    return web.json_response(METADATA)


@pytest.mark.parametrize(
    ("routes", "wanted"),
    [
        # A 401 naming nothing, from a server that publishes its metadata where RFC 9728 says to look.
        (
            {"/mcp": answer(401, 'Bearer realm="mcp"'), "/.well-known/oauth-protected-resource/mcp": metadata},
            MCPAuthType.OAUTH,
        ),
        ({"/mcp": answer(401), "/.well-known/oauth-protected-resource": metadata}, MCPAuthType.OAUTH),
        # A server of the 2025-03-26 revision: no resource metadata, its origin is its authorization server.
        ({"/mcp": answer(401, "Bearer"), "/.well-known/oauth-authorization-server": metadata}, MCPAuthType.OAUTH),
        # A 401 and no metadata anywhere: a credential no login gets (a key, most likely).
        ({"/mcp": answer(401, 'Bearer realm="api"')}, MCPAuthType.API_KEY),
        ({"/mcp": answer(200)}, MCPAuthType.NONE),
        # An error page or a 403 says nothing about what it wants.
        ({"/mcp": answer(500)}, None),
        ({"/mcp": answer(403)}, None),
    ],
    ids=["well-known-path", "well-known-root", "2025-03-26-origin", "key", "open", "error", "forbidden"],
)
async def test_what_a_server_asks_for(routes: dict[str, Handler], wanted: MCPAuthType | None) -> None:
    async with serving(routes) as base, aiohttp.ClientSession() as session:
        assert await auth_wanted(session, base + "/mcp") is wanted


async def test_a_challenge_naming_metadata_is_enough_and_nothing_else_is_fetched() -> None:
    fetched: list[str] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        fetched.append(request.path)
        return web.json_response(METADATA)

    challenge = 'Bearer resource_metadata="http://169.254.169.254/latest/meta-data"'
    routes = {"/mcp": answer(401, challenge), "/.well-known/oauth-protected-resource/mcp": elsewhere}
    async with serving(routes) as base, aiohttp.ClientSession() as session:
        assert await auth_wanted(session, base + "/mcp") is MCPAuthType.OAUTH
    assert fetched == []  # the URL the server named is never asked here, and no well-known either


async def test_a_server_that_cannot_be_reached_says_nothing() -> None:
    async with serving({}) as base:
        pass  # closed again: nothing listens there now
    async with aiohttp.ClientSession() as session:
        assert await auth_wanted(session, base + "/mcp", timeout_s=2) is None


def test_the_verdict_reads_only_a_401_as_wanting_a_credential() -> None:
    assert verdict(204, False, False) is MCPAuthType.NONE
    assert verdict(401, True, False) is MCPAuthType.OAUTH
    assert verdict(401, False, True) is MCPAuthType.OAUTH
    assert verdict(401, False, False) is MCPAuthType.API_KEY
    assert verdict(404, True, True) is None
