"""The upstream session on its own, against real MCP servers (both transports): the entry a check uses
(initialize, one request, close) and the one rule for a refused credential (`upstream.auth`): the credential
current at send time, renewed once with the value refused, then final."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.session import Upstream
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "check", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": "tools", "method": "tools/list"}


class Key:
    """The daemon's side of a keyed server: `sent` until a renewal, then `renewed` (None: renewal fails)."""

    def __init__(self, server: McpApiKeyServer, sent: str, renewed: str | None) -> None:
        self.name = server.header
        self.value = sent
        self.renewed = renewed
        self.rejected: list[str | None] = []
        self.verdicts: list[tuple[int, str | None]] = []  # what `answered` heard: (status, the value sent)

    def header(self) -> tuple[str, str] | None:
        return (self.name, self.value)

    async def renew(self, rejected: str | None) -> Result[None]:
        self.rejected.append(rejected)
        if self.renewed is None:
            return Failure("the key was refused", ErrorCode.AUTH_REQUIRED, "set a new one")
        self.value = self.renewed
        return Success(None)

    async def answered(self, status: int, sent: str | None) -> None:
        self.verdicts.append((status, sent))


@asynccontextmanager
async def upstream(server: McpApiKeyServer, key: Key) -> AsyncIterator[Upstream]:
    delivered: list[Message] = []

    async def deliver(message: Message) -> None:
        delivered.append(message)

    async with aiohttp.ClientSession() as http:
        session = Upstream("srv", server.url, http, key, deliver)
        try:
            yield session
        finally:
            await session.close()
    assert delivered == []  # our own requests' answers go to us, not to a client


async def list_tools(session: Upstream) -> list[str]:
    """What `chctl check` does: open a session, send one request, close (the caller closes)."""
    reply = await session.request(await Message.of(INITIALIZE))
    assert reply is not None and reply.has("result")
    await session.request(await Message.of(INITIALIZED))
    reply = await session.request(await Message.of(TOOLS_LIST))
    assert reply is not None and reply.id == "tools"
    return [tool["name"] for tool in json.loads(bytes(reply.body))["result"]["tools"]]


@pytest.mark.parametrize("transport", ["streamable", "sse"])
async def test_a_check_opens_a_session_sends_one_request_and_closes(
    mcp_api_key_server: McpApiKeyServerFactory, transport: str
) -> None:
    server = mcp_api_key_server(transport=transport)
    key = Key(server, server.key, renewed=None)
    async with upstream(server, key) as session:
        assert "echo" in await list_tools(session)
        assert session.transport == ("sse" if transport == "sse" else "streamable-http")
    assert key.rejected == [] and session.counters.renewals == 0


@pytest.mark.parametrize("transport", ["streamable", "sse"])
async def test_a_refused_credential_is_renewed_once_with_the_value_refused(
    mcp_api_key_server: McpApiKeyServerFactory, transport: str
) -> None:
    server = mcp_api_key_server(transport=transport)
    key = Key(server, "k-stale-key", renewed=server.key)
    async with upstream(server, key) as session:
        assert "echo" in await list_tools(session)
    assert key.rejected == ["k-stale-key"]  # once, then the renewed key was sent
    assert session.counters.renewals == 1
    # The daemon hears the renewed key's successes, and no refusal: the renewal cured the first 401.
    assert key.verdicts and all(200 <= status < 300 and sent == server.key for status, sent in key.verdicts)


@pytest.mark.parametrize("transport", ["streamable", "sse"])
async def test_a_credential_refused_after_its_renewal_is_final(
    mcp_api_key_server: McpApiKeyServerFactory, transport: str
) -> None:
    server = mcp_api_key_server(transport=transport)
    key = Key(server, "k-stale-key", renewed="k-still-wrong")
    async with upstream(server, key) as session:
        with pytest.raises(RelayFailure) as refused:
            await session.request(await Message.of(INITIALIZE))
    assert refused.value.failure.code == ErrorCode.AUTH_REQUIRED
    assert refused.value.failure.hint == "run `chctl auth srv`"
    assert key.rejected == ["k-stale-key"]  # one renewal, no loop
    assert key.verdicts == [(401, "k-still-wrong")]  # the final refusal, of the value that was refused
