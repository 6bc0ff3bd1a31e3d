"""Step-up authorization: a server refuses a tool call with 403 `insufficient_scope` naming more scopes than the
login asked for. The agent's request gets an error naming `chctl auth NAME`; `chctl status`, `chctl check` and
`chctl token` say the same; the notify command runs once; `chctl auth NAME` asks for the scopes held and wanted;
after it the same request works. A server that refuses even the scopes it named gets no login loop.

The server is our own aiohttp app (resource server and authorization server in one), shaped like the
conformance suite's step-up scenario: `read` to list tools, `read write` to call them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.oauth_fakes import serve
from tests.support.bridge import bridge_params
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv

BROWSER = Path(__file__).resolve().parent / "conformance" / "browser.py"
CALL_TIMEOUT_S = 30


@dataclass
class StepUpServer:
    """Lists tools with scope `read`; calls them with `read write` (`call_scope`), else 403 insufficient_scope."""

    call_scope: str = "read write"
    base: str = ""
    token_scopes: dict[str, set[str]] = field(default_factory=dict)
    code_scopes: dict[str, str] = field(default_factory=dict)
    authorize_scopes: list[str] = field(default_factory=list)  # the `scope` of each authorization request

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mcp", self.mcp)
        app.router.add_get("/.well-known/oauth-protected-resource/mcp", self.resource_metadata)
        app.router.add_get("/.well-known/oauth-authorization-server", self.as_metadata)
        app.router.add_post("/register", self.register)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app

    async def resource_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"resource": self.base + "/mcp", "authorization_servers": [self.base]})

    async def as_metadata(self, request: web.Request) -> web.Response:
        endpoints = {name: f"{self.base}/{name}" for name in ("authorize", "token", "register")}
        return web.json_response(
            {
                "issuer": self.base,
                "authorization_endpoint": endpoints["authorize"],
                "token_endpoint": endpoints["token"],
                "registration_endpoint": endpoints["register"],
                "code_challenge_methods_supported": ["S256"],
                "response_types_supported": ["code"],
            }
        )

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"client_id": secrets.token_hex(8), "redirect_uris": body["redirect_uris"]}, status=201
        )

    async def authorize(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope", "")
        self.authorize_scopes.append(scope)
        code = secrets.token_urlsafe(12)
        self.code_scopes[code] = scope
        query = urlencode({"code": code, "state": request.query["state"]})
        raise web.HTTPFound(f"{request.query['redirect_uri']}?{query}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        scope = self.code_scopes.pop(str(form.get("code")), "")
        access = secrets.token_urlsafe(16)
        self.token_scopes[access] = set(scope.split())
        return web.json_response({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": scope})

    async def mcp(self, request: web.Request) -> web.Response:
        message = await request.json()
        method = message.get("method", "")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        metadata = f'resource_metadata="{self.base}/.well-known/oauth-protected-resource/mcp"'
        if token not in self.token_scopes:
            return web.json_response(
                {"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": f'Bearer scope="read", {metadata}'}
            )
        needed = self.call_scope if method == "tools/call" else "read"
        if not set(needed.split()) <= self.token_scopes[token]:
            challenge = f'Bearer error="insufficient_scope", scope="{needed}", {metadata}'
            return web.json_response(
                {"error": "insufficient_scope"}, status=403, headers={"WWW-Authenticate": challenge}
            )
        if "id" not in message:
            return web.Response(status=202)
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": self.result(method)})

    @staticmethod
    def result(method: str) -> dict[str, Any]:
        if method == "initialize":
            info = {"name": "step-up", "version": "1"}
            return {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": info}
        if method == "tools/list":
            return {"tools": [{"name": "write_it", "inputSchema": {"type": "object"}}]}
        return {"content": [{"type": "text", "text": "written"}]}


async def run_chctl(user_env: UserEnv, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """chctl in a thread: the server under test answers on this event loop meanwhile."""
    return await asyncio.to_thread(chctl, user_env, *args, **options)


async def log_in(user_env: UserEnv) -> None:
    browser = {"BROWSER": f"{sys.executable} {BROWSER} %s"}
    done = await run_chctl(user_env, "auth", "srv", "--timeout", "20", extra_env=browser)
    assert done.returncode == 0, done.stderr


@asynccontextmanager
async def bridged(user_env: UserEnv) -> AsyncIterator[ClientSession]:
    params = bridge_params(user_env, "srv")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def status_of(user_env: UserEnv) -> dict[str, Any]:
    servers: list[dict[str, Any]] = json.loads((await run_chctl(user_env, "status", "--json")).stdout)["servers"]
    return next(server for server in servers if server["name"] == "srv")


@asynccontextmanager
async def running(server: StepUpServer, user_env: UserEnv) -> AsyncIterator[StepUpServer]:
    async with serve(server.app()) as base:
        server.base = base
        assert (await run_chctl(user_env, "init")).returncode == 0
        assert (await run_chctl(user_env, "add", "srv", "--url", base + "/mcp", "--bridge")).returncode == 0
        yield server


def test_a_call_refused_for_scope_says_what_to_do_and_works_after_the_login_for_more(
    daemon: DaemonProcess, user_env: UserEnv, tmp_path: Path
) -> None:
    notified = tmp_path / "notified"
    record = f"import os; open({str(notified)!r}, 'a').write(os.environ['CH_STATE'] + '\\n')"
    daemon.stop()
    daemon.extra_env["CH_NOTIFY_COMMAND"] = json.dumps([sys.executable, "-c", record])
    daemon.start()

    async def scenario() -> None:
        async with running(StepUpServer(), user_env) as server:
            await log_in(user_env)
            assert server.authorize_scopes == ["read"]  # the 401 challenge's scope
            async with bridged(user_env) as client:
                for _ in range(2):
                    with pytest.raises(
                        MCPError, match=r"lack of scope write .*run `chctl auth srv`: it asks for read write"
                    ):
                        await asyncio.wait_for(client.call_tool("write_it", {}), CALL_TIMEOUT_S)
                assert (await status_of(user_env))["scopes_wanted"] == ["write"]
                shown = await run_chctl(user_env, "status")
                assert "needs scope write → chctl auth srv" in shown.stdout
                checked = await run_chctl(user_env, "check", "srv")
                assert checked.returncode == 1 and "lack of scope write" in checked.stdout
                assert "`chctl auth srv`" in checked.stdout
                token = await run_chctl(user_env, "token", "srv")
                assert token.returncode == 0 and token.stdout.strip()  # still valid for what it covers
                assert "lack of scope write" in token.stderr and "chctl auth srv" in token.stderr
                await asyncio.to_thread(wait_for, notified.exists, 20, what="the notify command")

                await log_in(user_env)
                assert server.authorize_scopes[-1] == "read write"  # held and wanted
                result = await asyncio.wait_for(client.call_tool("write_it", {}), CALL_TIMEOUT_S)
                assert not result.is_error  # the same session, the same request
            assert (await status_of(user_env))["scopes_wanted"] == []
            assert notified.read_text() == "scope_needed\n"  # once, for two refused calls

    asyncio.run(scenario())


def test_a_server_refusing_the_scopes_it_named_gets_no_login_loop(daemon: DaemonProcess, user_env: UserEnv) -> None:
    async def scenario() -> None:
        async with running(StepUpServer(call_scope="read admin"), user_env) as server:
            await log_in(user_env)
            async with bridged(user_env) as client:
                with pytest.raises(MCPError, match=r"run `chctl auth srv`"):
                    await asyncio.wait_for(client.call_tool("write_it", {}), CALL_TIMEOUT_S)
                await log_in(user_env)
                assert server.authorize_scopes[-1] == "read admin"
                server.token_scopes = {token: {"read"} for token in server.token_scopes}  # the grant is narrowed
                with pytest.raises(MCPError) as refused:
                    await asyncio.wait_for(client.call_tool("write_it", {}), CALL_TIMEOUT_S)
                assert "logging in again would not help" in refused.value.error.message
                assert "`chctl auth srv`" not in refused.value.error.message  # no loop for a person or an adapter

    asyncio.run(scenario())
