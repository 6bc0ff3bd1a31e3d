"""JSON-RPC 2.0 over a Unix stream socket, one JSON object per line.

Each connection is served on its own task; a bad peer (wrong uid, an over-long line, idle mid-message, garbage)
gets an error or a closed connection and nobody else notices. A socket with `ConnectionLimits` (`remote.sock`)
refuses a connection or a bridge past its caps, or while the descriptors left run short, with LIMIT_REACHED.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ValidationError

from context_harness.daemon.descriptors import descriptors_left, note_exhausted, out_of_descriptors
from context_harness.primitives.peercred import peer_ids
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.throttled_log import ThrottledLog
from context_harness.workers.peer_limits import REFUSAL_READ_S, REFUSALS_AT_ONCE, ConnectionLimits

log = structlog.get_logger(__name__)

MAX_LINE_BYTES = 1024 * 1024  # a request larger than 1 MiB is refused; ours are a few hundred bytes
IDLE_TIMEOUT_S = 30.0  # a connection that sends nothing (or half a message) for this long is closed

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
APPLICATION_ERROR = -32000  # a service `Failure`; `data.code` holds the ErrorCode name

# The process on the other end of the connection being served (each connection has its own task, hence its
# own context): a handler that hands out a secret logs who asked.
CALLER_PID: contextvars.ContextVar[int | None] = contextvars.ContextVar("caller_pid", default=None)


@dataclass(frozen=True, slots=True)
class Method:
    params: type[BaseModel]
    handler: Callable[[Any], Awaitable[Result[Any]]]


class Takeover(Protocol):
    """What a stream method's handler returns on success: `reply` is sent as the JSON-RPC result, then
    `run` owns the connection (no idle timeout, no line limit of its own) until it returns. `run` is called
    even when the peer left before the reply: it is what lets go of what the handler took (a bridge's row in
    `chctl status`)."""

    @property
    def reply(self) -> dict[str, Any]: ...

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...


@dataclass(slots=True)
class TakeoverCount:
    """Connections taken over (bridges) through every socket of the daemon, and how many may be."""

    limit: int
    live: int = 0


class RpcServer:
    def __init__(
        self,
        methods: dict[str, Method],
        *,
        streams: dict[str, Method] | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
        refusal: str | None = None,
        limits: ConnectionLimits | None = None,
        all_takeovers: TakeoverCount | None = None,
    ) -> None:
        self.methods = methods
        # The remote socket: a method it does not serve is refused with this reason, not "not found".
        self.refusal = refusal
        self.streams = streams or {}  # methods that turn the connection into something else (the bridge relay)
        self.idle_timeout = idle_timeout
        self.limits = limits  # None: no caps of this socket's own (the local socket)
        self.all_takeovers = all_takeovers or TakeoverCount(sys.maxsize)  # shared with the daemon's other socket
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._takeovers: set[asyncio.Task[None]] = set()
        self._served = 0  # connections being served (not refused)
        self._refusing = 0  # refused connections whose request is being read before the answer
        self._bridges = 0  # connections taken over or being taken over through this socket
        self._refused = ThrottledLog("connection_refused")

    async def start(self, listener: socket.socket) -> None:
        # Python 3.13+ unlinks a Unix server's socket file on close by default. The file is not ours to
        # remove when systemd passed the socket in (a restart would find no path), and when we bound it
        # ourselves `main` removes it, checking it is still ours; so asyncio must leave it alone.
        keep_file: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        self._server = await asyncio.start_unix_server(
            self._serve_connection, sock=listener, limit=MAX_LINE_BYTES, **keep_file
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let requests in flight finish (up to `grace_s`), then drop the rest."""
        if self._server is not None:
            self._server.close()
        for task in self._takeovers:  # a bridge reconnects by itself; it must not hold up the shutdown
            task.cancel()
        pending = {t for t in self._connections if not t.done()}
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            sock = writer.get_extra_info("socket")
            uid, pid = peer_ids(sock) if sock is not None else (None, None)
            if uid != os.getuid():
                log.warning("peer_refused", peer_uid=uid)
                return
            refused = self._over_connection_limit()
            if refused is not None:
                await self._refuse(reader, writer, refused)
                return
            CALLER_PID.set(pid)
            self._served += 1
            try:
                await self._serve_lines(reader, writer)
            finally:
                self._served -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _over_connection_limit(self) -> Failure | None:
        """Why this connection is refused: its socket's cap, or too few descriptors left for the local socket."""
        limits = self.limits
        if limits is None:
            return None
        if self._served >= limits.max_connections:
            why = f"too many connections {limits.who}: {limits.max_connections} are open"
        elif descriptors_left() < limits.descriptor_reserve:
            why = "the daemon is short of file descriptors: what is left is kept for this machine"
        else:
            return None
        self._refused.note(reason=why)
        return Failure(why, ErrorCode.LIMIT_REACHED, "close some of them, or try again later")

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refused: Failure) -> None:
        """Answer the connection's request with `refused`; a flood's connections past REFUSALS_AT_ONCE are
        closed at once instead (they may see a reset rather than the reason)."""
        request_id = None
        if self._refusing < REFUSALS_AT_ONCE:
            self._refusing += 1
            try:
                async with asyncio.timeout(REFUSAL_READ_S):
                    request_id = _id_of(await reader.readuntil(b"\n"))
            except (TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                pass
            finally:
                self._refusing -= 1
        await _send(writer, _failure(request_id, refused))

    def _over_takeover_limit(self) -> Failure | None:
        limits, everyone = self.limits, self.all_takeovers
        if limits is not None and self._bridges >= limits.max_bridges:
            why = f"too many bridges {limits.who}: {limits.max_bridges} are open"
        elif everyone.live >= everyone.limit:
            why = f"too many bridges: {everyone.limit} are open"
        else:
            return None
        self._refused.note(reason=why)
        return Failure(why, ErrorCode.LIMIT_REACHED, "close some agent sessions, or try again later")

    async def _serve_lines(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readuntil(b"\n")
            except TimeoutError:
                log.info("connection_idle_closed")
                return
            except asyncio.LimitOverrunError:
                await _send(writer, _error(None, INVALID_REQUEST, f"request line over {MAX_LINE_BYTES} bytes"))
                log.warning("request_too_large")
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    log.info("connection_closed_mid_message")
                return
            if not line.strip():
                continue
            stream = self._stream_request(line)
            if stream is not None:
                await self._take_over(stream, reader, writer)
                return
            response = await self.handle_line(line)
            if response is not None:
                await _send(writer, response)

    def _stream_request(self, line: bytes) -> dict[str, Any] | None:
        """The request, when `line` calls a stream method (cheap test first: most lines do not)."""
        if not self.streams or not any(name.encode() in line for name in self.streams):
            return None
        try:
            message = parse_json(line)
        except (ValueError, RecursionError):
            return None
        if isinstance(message, dict) and message.get("method") in self.streams and "id" in message:
            return message
        return None

    async def _take_over(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request_id = request.get("id")
        refused = self._over_takeover_limit()
        if refused is not None:
            await _send(writer, _failure(request_id, refused))
            return
        self._bridges += 1
        self.all_takeovers.live += 1
        try:
            takeover = await self._open_takeover(request, writer)
            if takeover is None:
                return
            task = asyncio.current_task()
            if task is not None:
                self._takeovers.add(task)
            try:
                await takeover.run(reader, writer)
            finally:
                if task is not None:
                    self._takeovers.discard(task)
        finally:
            self._bridges -= 1
            self.all_takeovers.live -= 1

    async def _open_takeover(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> Takeover | None:
        """Run the stream method's handler and send its reply: the takeover, or None when it was refused."""
        request_id = request.get("id")
        method = self.streams[request["method"]]
        raw_params = request.get("params")
        try:
            params = method.params.model_validate({} if raw_params is None else raw_params)
            opened = await method.handler(params)
        except ValidationError as exc:
            await _send(writer, _error(request_id, INVALID_PARAMS, f"invalid params: {_problems(exc)}"))
            return None
        except Exception as exc:
            await _send(writer, _crashed(request_id, request["method"], exc))
            return None
        if isinstance(opened, Failure):
            await _send(writer, _failure(request_id, opened))
            return None
        takeover: Takeover = opened.value
        try:
            await _send(writer, {"jsonrpc": "2.0", "id": request_id, "result": takeover.reply})
        except (ConnectionError, OSError):
            pass  # the peer left: `run` finds the connection closed and cleans up
        return takeover

    async def handle_line(self, line: bytes) -> dict[str, Any] | list[dict[str, Any]] | None:
        try:
            message = parse_json(line)
        except (ValueError, RecursionError):  # bad JSON, NaN/Infinity, a 5,000-digit number, nesting too deep
            return _error(None, PARSE_ERROR, "parse error: not valid JSON")
        if isinstance(message, list):
            if not message:
                return _error(None, INVALID_REQUEST, "empty batch")
            replies = [r for r in [await self._handle_message(m) for m in message] if r is not None]
            return replies or None
        return await self._handle_message(message)

    async def _handle_message(self, message: Any) -> dict[str, Any] | None:
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != "2.0"
            or not isinstance(message.get("method"), str)
        ):
            request_id = message.get("id") if isinstance(message, dict) else None
            return _error(
                request_id if _valid_id(request_id) else None,
                INVALID_REQUEST,
                'invalid request: need {"jsonrpc": "2.0", "method": ...}',
            )
        request_id = message.get("id")
        if not _valid_id(request_id):
            return _error(None, INVALID_REQUEST, "invalid request: the id must be a string, a number or null")
        is_notification = "id" not in message
        reply = await self._dispatch(request_id, message["method"], message.get("params", {}))
        return None if is_notification else reply

    async def _dispatch(self, request_id: Any, name: str, raw_params: Any) -> dict[str, Any]:
        method = self.methods.get(name)
        if method is None:
            reason = f"{name} is {self.refusal}" if self.refusal else f"method not found: {name}"
            return _error(request_id, METHOD_NOT_FOUND, reason)
        if raw_params is None:
            raw_params = {}
        if not isinstance(raw_params, dict):
            return _error(request_id, INVALID_PARAMS, "params must be an object")
        try:
            params = method.params.model_validate(raw_params)
        except ValidationError as exc:
            return _error(request_id, INVALID_PARAMS, f"invalid params: {_problems(exc)}")
        try:
            result = await method.handler(params)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _crashed(request_id, name, exc)
        if isinstance(result, Failure):
            # Every failure leaves its reason in the log too (a Failure's text never holds a secret).
            log.info("rpc_method_failed", method=name, code=result.code.value, error=result.error)
            return _failure(request_id, result)
        assert isinstance(result, Success)
        return {"jsonrpc": "2.0", "id": request_id, "result": result.value}


def _crashed(request_id: Any, name: str, exc: Exception) -> dict[str, Any]:
    """The reply to a method that raised. No exception text in it: it could carry a token. The log has the
    type and traceback frames; running out of descriptors is logged once a minute, not at every request."""
    if out_of_descriptors(exc):
        note_exhausted(name)
        failure = Failure("the daemon has no file descriptor left", ErrorCode.LIMIT_REACHED, "try again shortly")
        return _failure(request_id, failure)
    log.exception("rpc_method_crashed", method=name)
    return _error(request_id, APPLICATION_ERROR, f"internal error in {name}", {"code": ErrorCode.INTERNAL.value})


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors(include_input=False)
    )


def _failure(request_id: Any, failure: Failure) -> dict[str, Any]:
    data: dict[str, Any] = {"code": failure.code.value}
    if failure.hint:
        data["hint"] = failure.hint
    return _error(request_id, APPLICATION_ERROR, failure.error, data)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: we could not send it back as JSON
        raise ValueError("number out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(line: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no float that overflows (Python's own limits refuse huge integers)."""
    return json.loads(line, parse_float=_finite_float, parse_constant=_refuse_constant)


def _id_of(line: bytes) -> Any:
    """The id of the request on `line`, to echo in an answer that does not run it (None if there is none)."""
    try:
        message = parse_json(line)
    except (ValueError, RecursionError):
        return None
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if _valid_id(request_id) else None


def _valid_id(request_id: Any) -> bool:
    """JSON-RPC 2.0 §4: a string, a number or null; anything else is not echoed back."""
    return request_id is None or (isinstance(request_id, str | int | float) and not isinstance(request_id, bool))


def _error(request_id: Any, code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def _send(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()
