"""When no metadata document answers, the error lists the URLs that were tried."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from context_harness.oauth.discovery import discover
from context_harness.primitives.result import ErrorCode, Failure
from tests.oauth_fakes import serve


async def test_missing_resource_metadata_lists_the_urls_tried() -> None:
    # No 401 either: not an OAuth server of any revision (one that asks for a token is a 2025-03-26 server).
    async def mcp(request: web.Request) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    app = web.Application()
    app.router.add_post("/api/mcp", mcp)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        result = await discover(session, base + "/api/mcp", 5)
    host = base.removeprefix("http://")
    assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR
    assert f"{host}/.well-known/oauth-protected-resource/api/mcp" in result.error
    assert f"{host}/.well-known/oauth-protected-resource)" in result.error
    assert "does not ask for a bearer token" in result.error


async def test_missing_authorization_server_metadata_lists_the_urls_tried() -> None:
    base_holder: list[str] = []

    async def mcp(request: web.Request) -> web.Response:
        return web.json_response({"error": "unauthorized"}, status=401)

    async def resource(request: web.Request) -> web.Response:
        return web.json_response(
            {"resource": base_holder[0] + "/mcp", "authorization_servers": [base_holder[0] + "/tenant/auth"]}
        )

    app = web.Application()
    app.router.add_post("/mcp", mcp)
    app.router.add_get("/.well-known/oauth-protected-resource/mcp", resource)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        base_holder.append(base)
        result = await discover(session, base + "/mcp", 5)
    host = base.removeprefix("http://")
    assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR
    assert f"{host}/.well-known/oauth-authorization-server/tenant/auth" in result.error
    assert f"{host}/.well-known/openid-configuration/tenant/auth" in result.error
    assert f"{host}/tenant/auth/.well-known/openid-configuration" in result.error
