"""The daemon's half of `chctl bridge NAME`: a socket connection turned into an MCP relay for one server.

`chctl bridge` is a dumb stdio relay; here each bridge gets its own upstream session (`upstream.session`),
with the server's current credential on every request. Each live bridge's counters are kept in its server's
`ServerState` while it is open, where `chctl status` reads them. What a bridge may hold is bounded
(`peer_limits.py`): the bytes of an unfinished line come out of a budget all bridges share (the remote ones a
smaller share of it), half a line that stalls (`CH_RPC_IDLE_TIMEOUT_S`) closes the bridge, and a remote bridge
idle too long is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from context_harness.primitives.outside_values import describe_url, is_secure_endpoint
from context_harness.primitives.relay_errors import relay_error
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.throttled_log import ThrottledLog
from context_harness.services.oauth_service import OAuthService
from context_harness.services.refresh_outcomes import refresh_result
from context_harness.services.server_state import ServerStates
from context_harness.stores.token_store import TokenStore
from context_harness.upstream.contract import Counters
from context_harness.upstream.limits import MAX_MESSAGE_BYTES
from context_harness.upstream.session import Upstream
from context_harness.workers.peer_limits import BridgeLimits, bridge_limits

log = structlog.get_logger(__name__)

READ_CHUNK_BYTES = 256 * 1024


class ServerCredentials:
    """`Credentials` for one server, read from the token store at every request."""

    def __init__(self, name: str, tokens: TokenStore, oauth: OAuthService):
        self.name = name
        self.tokens = tokens
        self.oauth = oauth
        # The header as of the token file's last version: a request costs one stat(), not a read and a parse.
        # Every save is an atomic rename, so a new token always means a new inode.
        self._cached: tuple[tuple[int, int, int], tuple[str, str] | None] | None = None

    def header(self) -> tuple[str, str] | None:
        try:
            info = os.stat(self.tokens.path(self.name))
        except OSError:
            return None
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        credential = self.tokens.load(self.name)
        header = None
        if credential is not None and credential.secret:
            header = (credential.header_name, credential.header_value())
        self._cached = (version, header)
        return header

    async def renew(self, rejected: str | None) -> Result[None]:
        name = self.name
        credential = self.tokens.load(name)
        if credential is None or not credential.secret:
            return Failure(
                f"{name} needs a login before it can be used", ErrorCode.AUTH_REQUIRED, f"run `chctl auth {name}`"
            )
        if credential.kind == "api_key":
            hint = f"set a new one: `chctl add {name} --bridge -k KEY`"
            return Failure(f"{name} refused the API key", ErrorCode.AUTH_REQUIRED, hint)
        rejected_token = rejected.split(" ", 1)[-1] if rejected else None
        renewed = refresh_result(name, await self.oauth.refresh_unless_replaced(name, rejected_token), "refused")
        return renewed if isinstance(renewed, Failure) else Success(None)  # the refresh told the change channel


class Bridges:
    """Every live bridge this daemon carries itself (one the laptop carries is `delegate.py`'s, chosen by
    `carrier.py`)."""

    def __init__(
        self,
        tokens: TokenStore,
        oauth: OAuthService,
        http: Callable[[], aiohttp.ClientSession],
        states: ServerStates,
        stall_s: float,  # half a message with no byte for this long closes the bridge (`CH_RPC_IDLE_TIMEOUT_S`)
    ) -> None:
        self.tokens = tokens
        self.oauth = oauth
        self.http = http
        self.states = states  # each live bridge's counters are in its server's state
        self.local_limits, self.remote_limits = bridge_limits()
        self.stall_s = stall_s
        self.over_budget = ThrottledLog("bridge_buffer_budget_exhausted")
        self._ids = itertools.count(1)

    def configure(self, stall_s: float) -> None:
        self.stall_s = stall_s

    def new_id(self) -> int:
        """A bridge id no other bridge of this daemon has (a delegated one's too)."""
        return next(self._ids)

    async def open(self, name: str, replay: list[dict[str, Any]], *, remote: bool = False) -> Result[Relay]:
        """Check the server can be bridged; the returned relay then owns the connection. `remote`: asked
        through `remote.sock`, so the remote bridges' limits apply."""
        url = await self.oauth.server_url_off_loop(name)
        if isinstance(url, Failure):
            return url
        if not is_secure_endpoint(url.value) and self.tokens.load(name) is not None:
            return Failure(
                f"refusing to send {name}'s credential in clear text to {describe_url(url.value)}",
                ErrorCode.INVALID_PARAMS,
                f"use the server's https:// URL: `chctl add {name} --bridge --url https://...`",
            )
        credentials = ServerCredentials(name, self.tokens, self.oauth)
        bridge_id = self.new_id()
        relay = Relay(self, bridge_id, name, self.remote_limits if remote else self.local_limits)
        counters = self.states.get(name).bridges[bridge_id] = Counters()  # `chctl status` reads it there
        upstream = Upstream(name, url.value, self.http(), credentials, relay.deliver, counters)
        relay.upstream = upstream
        if replay:
            await upstream.restore(replay)  # before the bridge sends anything else
        log.info("bridge_opened", server=name, bridge=bridge_id, restored=bool(replay))
        return Success(relay)


class Relay:
    """One bridge connection: client lines go upstream, upstream messages come back as lines."""

    def __init__(self, bridges: Bridges, bridge_id: int, name: str, limits: BridgeLimits) -> None:
        self.bridges = bridges
        self.id = bridge_id
        self.name = name
        self.limits = limits
        self.upstream: Upstream | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._last_byte_at = 0.0  # loop time of the last byte either way (the idle limit's clock)

    @property
    def reply(self) -> dict[str, Any]:
        return {"bridge": self.id, "server": self.name}

    async def deliver(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        async with self._write_lock:
            self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
            self._last_byte_at = asyncio.get_running_loop().time()
            await self._writer.drain()

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.upstream is not None
        self._writer = writer
        self._last_byte_at = asyncio.get_running_loop().time()
        try:
            async with self.upstream.carrying():  # every message's task ends with the connection
                await self._read(reader)
        finally:
            self.bridges.states.get(self.name).bridges.pop(self.id, None)
            await self.upstream.close()
            log.info("bridge_closed", server=self.name, bridge=self.id)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        pending: list[bytes] = []  # the start of a line still being received, its bytes taken from the budget
        size = 0
        budget = self.limits.budget
        try:
            while chunk := await self._next_chunk(reader, mid_message=size > 0):
                while (end := chunk.find(b"\n")) != -1:
                    line = b"".join([*pending, chunk[:end]])
                    budget.give(size)
                    pending, size, chunk = [], 0, chunk[end + 1 :]
                    await self._from_client(line)
                if not chunk:
                    continue
                if size + len(chunk) > MAX_MESSAGE_BYTES:
                    log.warning("bridge_message_too_large", server=self.name, bridge=self.id)
                    return
                if not budget.take(len(chunk)):
                    self.bridges.over_budget.note(server=self.name, limit=budget.limit)
                    return
                pending.append(chunk)
                size += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            budget.give(size)

    async def _next_chunk(self, reader: asyncio.StreamReader, *, mid_message: bool) -> bytes:
        """The next bytes from the client; b"" when it closed, stalled mid-message or (a remote bridge) sat idle."""
        loop = asyncio.get_running_loop()
        while True:
            if mid_message:
                wait: float | None = self.bridges.stall_s
            elif self.limits.idle_s is not None:
                wait = self._last_byte_at + self.limits.idle_s - loop.time()
            else:
                wait = None
            try:
                async with asyncio.timeout(wait):
                    chunk = await reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                if not mid_message and self._last_byte_at + (self.limits.idle_s or 0) > loop.time():
                    continue  # the server sent something meanwhile: not idle
                log.info("bridge_idle_closed", server=self.name, bridge=self.id, mid_message=mid_message)
                return b""
            self._last_byte_at = loop.time()
            return chunk

    async def _from_client(self, line: bytes) -> None:
        if not line.strip():
            return
        assert self.upstream is not None
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            await self.deliver({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            reply = relay_error(None, "not a JSON-RPC 2.0 message", ErrorCode.INVALID_PARAMS.value)
            await self.deliver(reply)
            return
        self.upstream.submit(message, line)
