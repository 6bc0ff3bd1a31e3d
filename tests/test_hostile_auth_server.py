"""An authorization server is outside input too: its metadata and token responses are read to 1 MiB at most,
and a redirect is answered as it is, never followed (a token request would carry the code or the refresh
token wherever it points)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from context_harness.oauth import http
from context_harness.primitives.result import ErrorCode, Failure, Success
from tests.oauth_fakes import serve


async def test_an_endless_metadata_document_is_cut_at_the_bound() -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            while sent < 80 * http.MAX_BODY_BYTES:
                await response.write(b" " * 65536)
                sent += 65536
                await asyncio.sleep(0)
        return response

    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", endless)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        got = await http.request(session, "GET", base + "/.well-known/oauth-authorization-server")
    assert isinstance(got, Failure) and got.code is ErrorCode.OAUTH_ERROR and "oversized" in got.error
    assert sent < 8 * http.MAX_BODY_BYTES  # we stopped reading: the server could not go on for long


async def test_a_redirect_from_a_token_endpoint_is_not_followed() -> None:
    elsewhere_hits = 0

    async def elsewhere(request: web.Request) -> web.Response:
        nonlocal elsewhere_hits
        elsewhere_hits += 1
        return web.json_response({})

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    app = web.Application()
    app.router.add_post("/token", moved)
    app.router.add_post("/elsewhere", elsewhere)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        got = await http.request(session, "POST", base + "/token", form={"grant_type": "refresh_token"})
    assert isinstance(got, Success) and got.value.status == 307
    assert elsewhere_hits == 0
