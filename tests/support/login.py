"""Logging in through the real daemon's RPC from an async test, against a fake authorization server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.oauth_fakes import FakeWorld
from tests.support.daemon import rpc
from tests.support.env import UserEnv


async def call(user_env: UserEnv, method: str, **params: Any) -> dict[str, Any]:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = await asyncio.to_thread(rpc, user_env.socket, request, None, 60)
    assert reply is not None, f"{method}: the daemon dropped the connection"
    return reply


async def login(user_env: UserEnv, world: FakeWorld, name: str = "srv", **add: Any) -> dict[str, Any]:
    """`chctl add` (`add`: more of its params, e.g. `bridge=True`) + `chctl auth` through the daemon, with a browser
    that approves at once."""
    config = user_env.project / "opencode.json"
    if not config.exists():
        config.write_text('{"mcp": {}}\n')
    added = await call(user_env, "mcp.add", cwd=str(user_env.project), name=name, url=world.server_url, **add)
    assert "result" in added, added
    started = await call(user_env, "auth.start", name=name, timeout_s=30)
    assert "result" in started, started
    async with aiohttp.ClientSession() as browser:
        async with browser.get(started["result"]["authorization_url"], allow_redirects=False) as resp:
            callback = resp.headers["Location"]
        async with browser.get(callback) as resp:
            await resp.read()
    return await call(user_env, "auth.wait", flow_id=started["result"]["flow_id"])
