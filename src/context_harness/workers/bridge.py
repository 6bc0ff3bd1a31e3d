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
import os
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import structlog

from context_harness.primitives.json_scan import NotJson
from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import describe_url, is_secure_endpoint
from context_harness.primitives.relay_errors import relay_error
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.throttled_log import ThrottledLog
from context_harness.services.oauth_service import OAuthService
from context_harness.services.refresh_outcomes import refresh_result
from context_harness.services.server_state import ServerStates
from context_harness.services.static_headers import static_headers
from context_harness.services.step_up import scope_refused
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore
from context_harness.upstream.limits import MAX_MESSAGE_BYTES, WRITE_SLICE_BYTES
from context_harness.upstream.messages import Message
from context_harness.upstream.session import Upstream
from context_harness.workers.peer_limits import BridgeLimits, bridge_limits

log = structlog.get_logger(__name__)

READ_CHUNK_BYTES = 256 * 1024
# JSON escapes a line break inside a string, so one in a message is whitespace between tokens: a space keeps
# the message whole on its line.
LINE_BREAKS_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")
PARSE_ERROR = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}


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
            fix = (credential.fix if credential is not None else None) or f"chctl auth {name}"
            return Failure(f"{name} needs a login before it can be used", ErrorCode.AUTH_REQUIRED, f"run `{fix}`")
        if credential.kind == "api_key":  # added again with a key, the server keeps its key header and mode
            hint = f"set a new one: `chctl add {name} -k KEY`"
            return Failure(f"{name} refused the API key", ErrorCode.AUTH_REQUIRED, hint)
        rejected_token = rejected.split(" ", 1)[-1] if rejected else None
        renewed = refresh_result(name, await self.oauth.refresh_unless_replaced(name, rejected_token), "refused")
        return renewed if isinstance(renewed, Failure) else Success(None)  # the refresh told the change channel

    async def scope_refused(self, scope: str | None) -> Failure:
        return await scope_refused(self.oauth.states, self.tokens, self.name, scope)

    async def answered(self, status: int, sent: str | None) -> None:
        """The server's verdict on `sent`, kept in the server's state (and announced) when it changes what
        `chctl status` says: a success clears a refusal; a 401 or 403 to the credential stored now is one."""
        if sent is None:
            return  # no credential was sent: a 401 then means "log in", which the state says already
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            current = self.header()
            if current is None or current[1] != sent:
                return  # refused a credential replaced meanwhile: not news about the one stored now
            await self.refused(status, refusal_message(status, self.tokens.load(self.name)))
            return
        await self.oauth.states.announce(self.oauth.states.get(self.name).accepted())

    async def refused(self, status: int, message: str) -> None:
        """The server refused the stored credential (`status`, `message`): `chctl status` and `doctor` show it."""
        change = self.oauth.states.get(self.name).refused(status, message)
        if change is not None:
            log.warning("credential_refused", server=self.name, status=status)
        await self.oauth.states.announce(change)


def refusal_message(status: int, credential: Credential | None) -> str:
    """A server's refusal of `credential` in words, for `chctl status` and `doctor`."""
    what = "API key" if credential is not None and credential.kind == "api_key" else "access token"
    if status == HTTPStatus.FORBIDDEN:
        return f"the server answers 403 Forbidden to the {what}: it is not allowed what was asked"
    if what == "API key":
        return "the server refuses the API key (401 Unauthorized)"
    return "the server refuses the access token, also after a refresh (401 Unauthorized)"


class Bridges:
    """Every live bridge this daemon carries itself (one the laptop carries is `delegate.py`'s, chosen by
    `carrier.py`)."""

    def __init__(
        self,
        tokens: TokenStore,
        oauth: OAuthService,
        http: Callable[[], aiohttp.ClientSession],
        states: ServerStates,
        bindings: BindingStore,
        stall_s: float,  # half a message with no byte for this long closes the bridge (`CH_RPC_IDLE_TIMEOUT_S`)
    ) -> None:
        self.tokens = tokens
        self.bindings = bindings  # the static headers recorded with them go with every request
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
        headers = static_headers(name, url.value, self.bindings.for_server(name), self.tokens.load(name))
        bridge_id = self.new_id()
        relay = Relay(self, bridge_id, name, self.remote_limits if remote else self.local_limits)
        counters = self.states.get(name).bridge_opened(bridge_id)  # `chctl status` reads it there
        upstream = Upstream(name, url.value, self.http(), credentials, relay.deliver, counters, headers)
        relay.upstream = upstream
        if replay:
            await upstream.restore([await Message.of(m) for m in replay])  # before the bridge sends anything else
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

    async def deliver(self, message: Message) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            self._last_byte_at = loop.time()
            await write_line(self._writer, message.body)
            self._last_byte_at = loop.time()  # a long message is written in slices: it ends now

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.upstream is not None
        self._writer = writer
        self._last_byte_at = asyncio.get_running_loop().time()
        try:
            async with self.upstream.carrying():  # every message's task ends with the connection
                await self._read(reader)
        finally:
            self.bridges.states.get(self.name).bridge_closed(self.id)
            await self.upstream.close()
            log.info("bridge_closed", server=self.name, bridge=self.id)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        line = bytearray()  # a line is gathered in one buffer, which becomes its message: held once
        held = 0  # the bytes of the unfinished line, taken from the budget
        budget = self.limits.budget
        try:
            while chunk := await self._next_chunk(reader, mid_message=held > 0):
                view, start = memoryview(chunk), 0
                while (end := chunk.find(b"\n", start)) != -1:
                    line += view[start:end]
                    budget.give(held)  # a finished line is a message now, the budget's no longer
                    finished, line, held, start = line, bytearray(), 0, end + 1
                    await self._from_client(finished)
                rest = len(chunk) - start
                if not rest:
                    continue
                if held + rest > MAX_MESSAGE_BYTES:
                    log.warning("bridge_message_too_large", server=self.name, bridge=self.id)
                    return
                if not budget.take(rest):
                    self.bridges.over_budget.note(server=self.name, limit=budget.limit)
                    return
                held += rest
                line += view[start:]
        except (ConnectionError, OSError):
            pass
        finally:
            budget.give(held)

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

    async def _from_client(self, line: bytearray) -> None:
        if not line or line.isspace():
            return
        assert self.upstream is not None
        try:
            message = await Message.read(line)
        except NotJson:
            await self.deliver(await Message.of(PARSE_ERROR))
            return
        if message.is_batch or message.get("jsonrpc") != "2.0":
            reply = relay_error(None, "not a JSON-RPC 2.0 message", ErrorCode.INVALID_PARAMS.value)
            await self.deliver(await Message.of(reply))
            return
        self.upstream.submit(message)


async def write_line(writer: asyncio.StreamWriter, body: memoryview) -> None:
    """`body` and a LF, in slices each drained before the next (the transport would copy what the socket does
    not take at once: a large message written whole would be held twice)."""
    size = len(body)
    for start in range(0, max(size, 1), WRITE_SLICE_BYTES):
        piece = bytes(body[start : start + WRITE_SLICE_BYTES])
        if b"\n" in piece or b"\r" in piece:
            piece = piece.translate(LINE_BREAKS_TO_SPACES)
        writer.write(piece + b"\n" if start + WRITE_SLICE_BYTES >= size else piece)
        await writer.drain()
