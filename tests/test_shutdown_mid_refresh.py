"""SIGTERM while a refresh is in flight: the refresh finishes its writes, then the daemon exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time

from aiohttp import web

from context_harness.config.jsonc import parse_jsonc
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore
from tests.oauth_fakes import serve
from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv


async def test_sigterm_mid_refresh_lets_the_write_finish(user_env: UserEnv) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow_token(request: web.Request) -> web.StreamResponse:
        await request.post()
        arrived.set()
        await release.wait()
        return web.json_response({"access_token": "after-sigterm", "refresh_token": "rotated", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", slow_token)
    async with serve(app) as base:
        config = user_env.project / "opencode.json"
        entry = '{"type": "remote", "url": "http://127.0.0.1:9/mcp", "oauth": false}'
        config.write_text('{\n  "mcp": {"srv": ' + entry + "}\n}\n")
        binding = Binding(path=str(config), url="http://127.0.0.1:9/mcp")
        BindingStore(user_env.ch_home / "bindings.json").bind("srv", binding)
        now = time.time()
        TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets").save(
            Credential(
                name="srv",
                kind="oauth",
                state=TokenState.ACTIVE,
                token_endpoint=f"{base}/token",
                client_id="c",
                tokens=OAuthTokens(access_token="before", refresh_token="r0", issued_at=now - 100, expires_at=now + 30),
                server_url="http://127.0.0.1:9/mcp",
            )
        )
        process = DaemonProcess(user_env).start()  # the token is due: the refresh starts at once
        await asyncio.wait_for(arrived.wait(), 10)
        process.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert process.proc.poll() is None  # still finishing the refresh
        release.set()
        code = await asyncio.to_thread(process.proc.wait, 20)
    assert code == 0
    saved = json.loads((user_env.ch_home / "tokens" / "srv.json").read_text())
    assert saved["tokens"]["access_token"] == "after-sigterm" and saved["tokens"]["refresh_token"] == "rotated"
    assert parse_jsonc(config.read_text())["mcp"]["srv"]["headers"]["Authorization"] == "Bearer after-sigterm"
    assert not user_env.socket.exists()
