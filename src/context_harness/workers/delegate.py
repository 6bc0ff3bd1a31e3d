"""On a remote machine: the servers this daemon holds no credential for are used through another daemon's
restricted socket (`CH_DELEGATE_SOCKET`, usually forwarded over SSH from the laptop), so no token ever lands here.

A delegated bridge pipes lines to `bridge.open` on that socket instead of running an upstream session. When
the forward goes away (SSH closed), requests get an error saying to reconnect; the next request after it is
back opens the bridge again, replaying the client's own `initialize`, so nothing has to be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import structlog

from context_harness.primitives.peercred import listener_uid
from context_harness.primitives.relay_errors import relay_error
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

CALL_TIMEOUT_S = 30.0  # a delegate that accepts but does not answer in this time is hung (auth.wait: none)
STATUS_TIMEOUT_S = 3.0  # `chctl status` on the remote does not wait long for the laptop's part of the answer
USABLE_STATES = ("active", "api_key", "no_auth")
MAX_LINE_BYTES = 64 * 1024 * 1024  # as the daemon's own relay: MCP messages can be large


def _unreachable(path: Path) -> Failure:
    return Failure(
        f"the laptop's daemon is not reachable through {path}",
        ErrorCode.DAEMON_UNAVAILABLE,
        "reconnect the SSH session that forwards it (`chctl remote ssh-config HOST` on the laptop shows how)",
    )


def _foreign(writer: asyncio.StreamWriter, path: Path) -> Failure | None:
    """Why the listener on `path` is not to be talked to (another uid's, or one the kernel cannot name); None
    when it is the user's own."""
    sock = writer.get_extra_info("socket")
    uid, mine = (listener_uid(sock, path) if sock is not None else None), os.getuid()
    if uid == mine:
        return None
    who = "an unknown user" if uid is None else f"uid {uid}"
    return Failure(
        f"refusing the delegate socket {path}: it is served by {who}, not by you (uid {mine}); nothing was sent to it",
        ErrorCode.DAEMON_UNTRUSTED,
        "another user may be listening there for your sessions: set CH_DELEGATE_SOCKET to the path your own SSH "
        "forward creates, in a directory only you can write (`chctl remote ssh-config HOST` on the laptop shows "
        "it), and have the other socket removed",
    )


def _failure_of(reply: dict[str, Any]) -> Failure:
    """A JSON-RPC error from the delegate, as our own Failure (its text and hint pass through)."""
    found = reply.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    data: dict[str, Any] = error["data"] if isinstance(error.get("data"), dict) else {}
    try:
        code = ErrorCode(data.get("code", ErrorCode.INVALID_PARAMS.value))
    except ValueError:
        code = ErrorCode.INVALID_PARAMS
    hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    return Failure(str(error.get("message", "the laptop's daemon refused the request")), code, hint)


async def _request(
    path: Path, method: str, params: dict[str, Any], wait_s: float | None
) -> tuple[Result[Any], tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
    try:
        async with asyncio.timeout(wait_s):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE_BYTES)
            foreign = _foreign(writer, path)
            if foreign is not None:
                writer.close()
                return foreign, None
            request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            writer.write(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return _unreachable(path), None
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        writer.close()
        return _unreachable(path), None
    if "error" in reply:
        writer.close()
        return _failure_of(reply), None
    return Success(reply.get("result")), (reader, writer)


class Delegate:
    """The forwarded socket, if one is configured; which servers go there; which logins in progress run there."""

    def __init__(self, path: Path | None, tokens: TokenStore, bindings: BindingStore) -> None:
        self.path = path
        self.tokens = tokens
        self.bindings = bindings
        self.flows: set[str] = set()

    def via(self, name: str, bindings: list[Binding] | None = None) -> Path | None:
        """The socket that carries `name`: it has no credential here, and no entry here reaches its server
        directly (one added with `--url` on this machine, in header mode or bridged to an https URL, stays
        local: it is the user's own choice, e.g. a server that needs no login)."""
        if self.path is None or self.tokens.path(name).exists():
            return None
        bindings = self.bindings.for_server(name) if bindings is None else bindings
        if any(b.mode == "header" or (b.url or "").startswith(("http://", "https://")) for b in bindings):
            return None
        return self.path

    async def call(self, method: str, params: dict[str, Any], wait_s: float | None = CALL_TIMEOUT_S) -> Result[Any]:
        assert self.path is not None
        result, stream = await _request(self.path, method, params, wait_s)
        if stream is not None:
            stream[1].close()
        return result

    async def fill_in(self, rows: list[dict[str, Any]]) -> None:
        """The laptop's state and expiry for the status rows it carries, or why they are not to be had."""
        answer = await self.call("status", {}, wait_s=STATUS_TIMEOUT_S)
        there = {r.get("name"): r for r in answer.value.get("servers", [])} if isinstance(answer, Success) else {}
        for row in (r for r in rows if r["via"]):
            found = there.get(row["name"])
            if isinstance(answer, Failure):
                row["last_error"] = f"{answer.error} ({answer.hint})" if answer.hint else answer.error
            elif found is None:
                row["last_error"] = f"not shared by the laptop: run `chctl share {row['name']}` there"
            else:
                row.update(state=found.get("state"), expires_at=found.get("expires_at"))
                row["usable"] = row["state"] in USABLE_STATES

    async def open_bridge(self, bridge_id: int, name: str, replay: list[dict[str, Any]]) -> Result[DelegatedRelay]:
        assert self.path is not None
        relay = DelegatedRelay(self.path, bridge_id, name, replay)
        opened = await relay.connect()
        return opened if isinstance(opened, Failure) else Success(relay)


class DelegatedRelay:
    """One bridge carried by the delegate: client lines go there, its lines come back."""

    def __init__(self, path: Path, bridge_id: int, name: str, replay: list[dict[str, Any]]) -> None:
        self.path = path
        self.id = bridge_id
        self.name = name
        self.replay = list(replay)  # the client's `initialize` and `notifications/initialized`, once seen
        self.pending: set[Any] = set()  # ids of requests sent there and not yet answered
        self._up: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._client: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()

    @property
    def reply(self) -> dict[str, Any]:
        return {"bridge": self.id, "server": self.name, "via": str(self.path)}

    async def connect(self) -> Result[None]:
        params = {"name": self.name, "replay": self.replay}
        opened, stream = await _request(self.path, "bridge.open", params, CALL_TIMEOUT_S)
        if stream is None:
            return opened if isinstance(opened, Failure) else _unreachable(self.path)
        reader, self._up = stream
        self._pump = asyncio.create_task(self._from_delegate(reader))
        log.info("delegated_bridge_connected", server=self.name, bridge=self.id, via=str(self.path))
        return Success(None)

    async def _deliver(self, line: bytes) -> None:
        if self._client is None or self._client.is_closing():
            return
        async with self._write_lock:
            self._client.write(line if line.endswith(b"\n") else line + b"\n")
            await self._client.drain()

    async def _from_delegate(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = _parse(line)
                if message is not None and "method" not in message:
                    self.pending.discard(message.get("id"))
                await self._deliver(line)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self._up = None
            lost = _unreachable(self.path)
            for request_id in sorted(self.pending, key=str):  # they may have run there: resending is the client's call
                await self._deliver(_error_line(request_id, lost))
            self.pending.clear()
            log.warning("delegated_bridge_lost", server=self.name, bridge=self.id)

    async def _to_delegate(self, line: bytes) -> None:
        message = _parse(line) or {}
        is_request = "id" in message and "method" in message
        if self._up is None or self._up.is_closing():
            if self._pump is not None:
                await asyncio.gather(self._pump, return_exceptions=True)  # its errors are out first
            back = await self.connect()  # with the session's own `initialize`, replayed there
            if isinstance(back, Failure):
                if is_request:
                    await self._deliver(_error_line(message["id"], back))
                return
        assert self._up is not None
        method = message.get("method")
        if method in ("initialize", "notifications/initialized"):  # kept for the next reconnection
            self.replay = [m for m in self.replay if m.get("method") != method] + [message]
        if is_request:
            self.pending.add(message["id"])
        try:
            self._up.write(line + b"\n")
            await self._up.drain()
        except (ConnectionError, OSError):
            pass  # the pump notices and answers what was pending

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._client = writer
        try:
            while line := await reader.readline():
                if line.strip():
                    await self._to_delegate(line.rstrip(b"\n"))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            if self._up is not None:
                self._up.close()
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            log.info("bridge_closed", server=self.name, bridge=self.id, via=str(self.path))


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _error_line(request_id: Any, failure: Failure) -> bytes:
    reply = relay_error(request_id, failure.error, failure.code.value, failure.hint)
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"
