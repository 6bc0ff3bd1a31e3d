"""The 2026-07-28 protocol through the bridge, with the `mcp` 2.x SDK's own `Client` in its default `mode="auto"`
(it sends `server/discover`, and falls back to `initialize` on an older server) against the SDK's servers: no
`initialize` and no session id, the version in every request's `_meta` and `MCP-Protocol-Version` header,
`subscriptions/listen` streams. A daemon restart, a refused token, a lost stream; an older-only server beside a
new-only one; and `chctl check` saying which protocol each speaks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp.client.client import Client
from mcp.client.subscriptions import ToolsListChanged
from mcp_types import TextContent

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer
from tests.support.bridge import bridge_params
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

MODERN = "2026-07-28"
CALL_TIMEOUT_S = 30


def add(user_env: UserEnv, name: str, *args: str) -> None:
    if not (user_env.project / "opencode.json").exists():
        assert chctl(user_env, "init").returncode == 0
    done = chctl(user_env, "add", name, "--bridge", *args)
    assert done.returncode == 0, done.stderr


def add_keyed(user_env: UserEnv, name: str, factory: McpApiKeyServerFactory, era: str) -> None:
    server = factory(era=era)
    add(user_env, name, "--url", server.url, "--key-header", server.header, "-k", server.key)


@asynccontextmanager
async def auto_client(user_env: UserEnv, name: str) -> AsyncIterator[Client]:
    """The SDK's Client in its default mode, over the command a bridged entry runs."""
    params = bridge_params(user_env, name)
    async with Client(params, mode="auto", read_timeout_seconds=CALL_TIMEOUT_S) as client:
        yield client


async def text_of(client: Client, tool: str, **arguments: Any) -> str:
    result = await asyncio.wait_for(client.call_tool(tool, arguments), CALL_TIMEOUT_S)
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def test_a_modern_session_goes_on_after_a_daemon_restart_without_an_initialize(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    """The server speaks 2026-07-28 only: an `initialize` sent into the session would be refused (-32022)."""
    add_keyed(user_env, "modern", mcp_api_key_server, "modern")

    async def scenario() -> None:
        async with auto_client(user_env, "modern") as client:
            assert client.protocol_version == MODERN
            assert await text_of(client, "echo", text="before") == "before"
            await asyncio.to_thread(daemon.stop)
            await asyncio.to_thread(daemon.start)
            assert await text_of(client, "echo", text="after") == "after"  # the bridge found the new daemon

    asyncio.run(scenario())
    assert [e["restored"] for e in events(daemon, "bridge_opened")] == [False]  # nothing replayed
    assert not events(daemon, "upstream_session_reinitialized") and not events(daemon, "relay_request_failed")


def test_a_refused_token_is_renewed_in_a_modern_session(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    add(user_env, "srv", "--url", mcp_oauth_server.url)
    login = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    assert login.returncode == 0, login.stderr

    async def scenario() -> None:
        async with auto_client(user_env, "srv") as client:
            assert client.protocol_version == MODERN
            assert await text_of(client, "whoami")
            # The stored access token is one the server no longer accepts (revoked, or expired early): it answers
            # 401, and the refresh token is still good.
            path = user_env.ch_home / "tokens" / "srv.json"
            stored = json.loads(path.read_text())
            stored["tokens"]["access_token"] = "no-longer-accepted"
            path.write_text(json.dumps(stored))
            assert await text_of(client, "whoami")  # renewed by a refresh, sent again
            [bridge] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]["bridges"]
            assert bridge["renewals"] == 1

    asyncio.run(scenario())


def test_a_listen_stream_lost_with_the_daemon_is_listened_to_again(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    add_keyed(user_env, "modern", mcp_api_key_server, "modern")

    async def scenario() -> None:
        async with auto_client(user_env, "modern") as client:
            async with client.listen(tools_list_changed=True) as subscription:
                assert subscription.honored.tools_list_changed
                await asyncio.to_thread(daemon.stop)  # the stream goes with it
                with pytest.raises(Exception):  # noqa: B017 (the SDK's SubscriptionLost or the relay's error)
                    async for _event in subscription:
                        pass
            await asyncio.to_thread(daemon.start)
            async with client.listen(tools_list_changed=True) as subscription:
                assert await text_of(client, "announce") == "announced"
                event = await asyncio.wait_for(anext(aiter(subscription)), CALL_TIMEOUT_S)
                assert isinstance(event, ToolsListChanged)

    asyncio.run(scenario())


def test_an_older_only_server_beside_a_new_only_one_and_check_says_which_speaks_what(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    add_keyed(user_env, "older", mcp_api_key_server, "legacy")
    add_keyed(user_env, "newer", mcp_api_key_server, "modern")

    async def scenario() -> None:
        async with auto_client(user_env, "older") as older, auto_client(user_env, "newer") as newer:
            assert (older.protocol_version, newer.protocol_version) == ("2025-11-25", MODERN)
            assert await text_of(older, "echo", text="old") == "old"
            assert await text_of(newer, "echo", text="new") == "new"

    asyncio.run(scenario())
    checked = chctl(user_env, "check", "older", "newer", "--json")
    assert checked.returncode == 0, checked.stdout
    protocols = {probe["name"]: probe["protocol_version"] for probe in json.loads(checked.stdout)}
    assert protocols == {"older": "2025-06-18", "newer": MODERN}
    assert "MCP 2026-07-28" in chctl(user_env, "check", "newer").stdout
