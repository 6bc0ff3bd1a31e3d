"""What both transports share: the session's state at the server, the relaying of what it sends, and the
way to start the session over (which the session provides: `upstream.session`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import aiohttp.payload
import structlog

from context_harness.net.failures import ReachKind
from context_harness.primitives.json_scan import Data
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.auth import AuthFlow, AuthPolicy
from context_harness.upstream.contract import Deliver, RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.sse import SseParser, json_messages

log = structlog.get_logger(__name__)

ACCEPT_BOTH = "application/json, text/event-stream"
# A tool may run for minutes and a stream stays open for hours: only connecting is bounded.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
CLOSE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_STREAMED: dict[str, Any] = {"timeout": STREAM_TIMEOUT, "allow_redirects": False}


class Core:
    def __init__(self, name: str, url: str, http: aiohttp.ClientSession, auth: AuthPolicy, deliver: Deliver):
        self.name = name
        self.url = url
        self.http = http
        self.auth = auth
        self.deliver = deliver
        self.counters = auth.counters
        self.static_headers: dict[str, str] = {}  # sent with every request (`services.static_headers`)
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.generation = 0  # bumped by every re-initialization: requests that saw an older one retry
        self.closing = False
        self.waiters: dict[Any, asyncio.Future[Message]] = {}  # responses to our own requests
        self.tasks: set[asyncio.Task[None]] = set()
        self.listener: asyncio.Task[None] | None = None  # the server's own stream (both transports)
        self.listener_generation = -1
        # For `chctl check`: the server's last HTTP status and WWW-Authenticate, and where a request last failed.
        self.last_answer: tuple[int, str | None] | None = None
        self.last_reach_failure: ReachKind | None = None

    @property
    def transport(self) -> Literal["streamable-http", "sse"] | None:
        """The transport the server speaks, kept with the counters (`chctl status` shows it)."""
        return self.counters.transport

    @transport.setter
    def transport(self, value: Literal["streamable-http", "sse"] | None) -> None:
        self.counters.transport = value

    # --- provided by the session -------------------------------------------------------------------------

    async def reinitialize(self, seen_generation: int) -> None:
        """Initialize the session again; once for all who saw generation `seen_generation` break."""
        raise NotImplementedError

    def reinitialize_soon(self, seen_generation: int) -> None:
        """The same, from a task of its own."""
        raise NotImplementedError

    # --- shared by the transports ------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def listen_with(self, work: Coroutine[Any, Any, None]) -> None:
        """The server's own stream is now read by `work`, for the current generation of the session."""
        if self.listener is not None:
            self.listener.cancel()
        self.listener_generation = self.generation
        self.listener = asyncio.get_running_loop().create_task(work)

    def headers(self, extra: dict[str, str], flow: AuthFlow, *, with_session: bool = True) -> dict[str, str]:
        """The request's headers: the static ones, the request's own, the session's, the credential current now."""
        headers = {**self.static_headers, **extra}
        if with_session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if with_session and self.protocol_version and "MCP-Protocol-Version" not in headers:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return flow.sign(headers)

    async def incoming(self, message: Message) -> None:
        """A message from the server: to its waiter if it answers one of ours, else to the client."""
        if message.is_batch:  # a JSON-RPC batch
            items, skipped = await messages.batch_members(message)
            if skipped:
                log.warning("upstream_sent_non_message", server=self.name, count=skipped)
            for item in items:
                await self.incoming(item)
            return
        key = messages.lookup_id(message.id) if message.is_response else None
        waiter = self.waiters.get(key) if key is not None else None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(message)
            return
        await self.deliver(message)

    async def relay_stream(self, response: aiohttp.ClientResponse, parser: SseParser, request: Message | None) -> bool:
        """Relay an SSE stream's messages as they arrive; True once `request`'s response has come."""
        answered = False
        want = request.id if request is not None and request.is_request else None
        try:
            async with asyncio.timeout(None) as grace:
                async for chunk in response.content.iter_any():
                    found, unreadable = await json_messages(parser.feed(chunk))
                    if unreadable:
                        log.warning("upstream_sent_non_json_event", server=self.name, count=unreadable)
                    for message in found:
                        if want is not None and not message.is_batch and message.id == want:
                            answered = message.is_response
                            if request is not None and request.method == "initialize":
                                self.protocol_version = messages.protocol_version_of(message)
                        await self.incoming(message)
                    if answered and grace.when() is None:  # the server may close the stream now, not hold it
                        grace.reschedule(asyncio.get_running_loop().time() + limits.ANSWERED_STREAM_GRACE_S)
        except TimeoutError:
            if not answered:
                raise
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            log.info("upstream_stream_dropped", server=self.name, last_event_id=parser.last_event_id is not None)
        except limits.TooLarge:
            raise RelayFailure(limits.too_large(self.name)) from None
        return answered

    def answered(self, response: aiohttp.ClientResponse) -> int:
        self.last_answer = (response.status, response.headers.get("WWW-Authenticate"))
        return response.status

    def unusable(self, status: int) -> Failure:
        return refused_by(self.name, status)


def refused_by(name: str, status: int, words: str | None = None) -> Failure:
    """A server's HTTP refusal (with no JSON-RPC error of its own) in words, with what to do about it; `words`: what
    the server itself said (bounded and printable), quoted after ours."""
    refusal = _refusal(name, status)
    if not words:
        return refusal
    return Failure(f"{refusal.error}: {words}", refusal.code, refusal.hint)


def _refusal(name: str, status: int) -> Failure:
    if status == 403:
        return Failure(
            f"{name} refused the request (HTTP 403: forbidden)",
            ErrorCode.AUTH_REQUIRED,
            f"the credential lacks access: log in with the scopes it needs (`chctl auth {name} --scope SCOPE`), "
            "or ask the server's operator",
        )
    if status in (404, 405, 410):
        return Failure(
            f"{name} has no MCP endpoint at its URL (HTTP {status})",
            ErrorCode.NETWORK,
            f"check the URL (`chctl list`); `chctl add {name} --url URL` points it elsewhere",
        )
    if status == 400:
        return Failure(
            f"{name} refused the request as malformed (HTTP 400)",
            ErrorCode.NETWORK,
            f"it may speak another MCP revision: `chctl check {name}` says which it answers",
        )
    if status in (408, 425, 429) or status >= 500:
        return Failure(f"{name} failed or is busy (HTTP {status})", ErrorCode.NETWORK, "try again shortly")
    return Failure(f"{name} answered HTTP {status}", ErrorCode.NETWORK, f"`chctl check {name}` asks it afresh")


class MessageBody(aiohttp.payload.Payload):
    """A message as a request body, written in slices: the transport copies whatever the socket does not take
    at once, so a large message written whole would be held twice."""

    def __init__(self, body: Data | memoryview) -> None:
        super().__init__(memoryview(body), content_type="application/json")
        self._size = len(self._value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None) -> None:
        view: memoryview = self._value if content_length is None else self._value[:content_length]
        for start in range(0, len(view), limits.WRITE_SLICE_BYTES):
            await writer.write(view[start : start + limits.WRITE_SLICE_BYTES])  # it drains past 64 KiB


@contextlib.asynccontextmanager
async def post(
    http: aiohttp.ClientSession, url: str, body: Data | memoryview, headers: dict[str, str]
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST, once more if the server had closed the pooled connection before it read our request."""
    try:
        response = await http.post(url, data=MessageBody(body), headers=headers, **_STREAMED)
    except aiohttp.ServerDisconnectedError:
        response = await http.post(url, data=MessageBody(body), headers=headers, **_STREAMED)
    try:
        yield response
    finally:
        response.release()


def same_origin(a: str, b: str) -> bool:
    """The legacy `endpoint` must stay on the server's own origin: our credential goes there."""
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)
