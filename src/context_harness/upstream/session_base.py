"""What both transports work on: the session's state at the server (`SessionState`), the one signed send
(`send_signed`), the relaying of what a server sends, and the session's tasks that outlive their caller.

Concurrency: asyncio, as aiohttp's are (its streams read under `asyncio.timeout`; the server's own stream is a
task of its own, since it outlives the scope of whoever started it: a check, a restore, a client's request).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import aiohttp.payload
import structlog

from context_harness.primitives.json_scan import Data
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.auth import AuthFlow, AuthPolicy
from context_harness.upstream.contract import Counters, Deliver, RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.sse import SseParser, json_messages

log = structlog.get_logger(__name__)

ACCEPT_BOTH = "application/json, text/event-stream"
# A tool may run for minutes and a stream stays open for hours: only connecting is bounded.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
CLOSE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_STREAMED: dict[str, Any] = {"timeout": STREAM_TIMEOUT, "allow_redirects": False}


class Background:
    """The session's tasks that outlive their caller: the server's own stream (one reader at a time, for one
    generation of the session) and the re-initializations that reader asks for."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.listener: asyncio.Task[None] | None = None
        self.listener_generation = -1

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def listening(self, generation: int) -> bool:
        """Whether the server's stream is being read for `generation`."""
        return self.listener is not None and not self.listener.done() and self.listener_generation == generation

    def listen_with(self, work: Coroutine[Any, Any, None], generation: int) -> None:
        """The server's own stream is now read by `work`, for `generation` of the session."""
        self.stop_listening()
        self.listener_generation = generation
        self.listener = asyncio.get_running_loop().create_task(work)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.cancel()

    async def stop(self) -> None:
        """Cancel every task and wait for each to end."""
        running = [*self.tasks, *([self.listener] if self.listener else [])]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass(eq=False)
class SessionState:
    """One upstream session as the transports see it: where the server is, what it calls the session, and how
    requests are signed. The transports are functions of it (`upstream.streamable`, `upstream.legacy_sse`)."""

    name: str
    url: str
    http: aiohttp.ClientSession
    auth: AuthPolicy
    route: Deliver  # where each message from the server goes (the session's: to a waiter, else to the client)
    static_headers: dict[str, str] = field(default_factory=dict)  # sent with every request (not the credential)
    session_id: str | None = None
    protocol_version: str | None = None
    generation: int = 0  # bumped by every re-initialization: requests that saw an older one retry
    endpoint: str | None = None  # the legacy transport's: where messages are POSTed
    closing: bool = False
    # For `chctl check`: the server's last HTTP status and WWW-Authenticate to one of the client's messages.
    last_answer: tuple[int, str | None] | None = None
    background: Background = field(default_factory=Background)

    @property
    def counters(self) -> Counters:
        return self.auth.counters

    @property
    def transport(self) -> Literal["streamable-http", "sse"] | None:
        """The transport the server speaks, kept with the counters (`chctl status` shows it)."""
        return self.counters.transport

    @transport.setter
    def transport(self, value: Literal["streamable-http", "sse"] | None) -> None:
        self.counters.transport = value

    def headers(self, extra: dict[str, str], *, with_session: bool = True) -> dict[str, str]:
        """A request's headers before signing: the static ones, the request's own, the session's."""
        headers = {**self.static_headers, **extra}
        if with_session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if with_session and self.protocol_version and "MCP-Protocol-Version" not in headers:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers


class Posted(enum.Enum):
    """How sending one message ended, when it did not fail."""

    DONE = "done"  # sent, and what came back relayed (for the legacy transport: it comes on the stream)
    LEGACY = "legacy"  # the server answered `initialize` as one that speaks only the legacy HTTP+SSE transport


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The server no longer knows the session the message was sent in: the caller initializes it again (once
    for all who saw `generation` break) and sends the message again."""

    generation: int


@dataclass(frozen=True, slots=True)
class Sent:
    """The answer to a signed send, and the session it was sent in (read before sending: a re-initialization
    begun meanwhile changes the state, not what this request carried)."""

    response: aiohttp.ClientResponse
    generation: int
    in_session: bool  # it carried an Mcp-Session-Id


Send = Callable[[dict[str, str]], Awaitable[aiohttp.ClientResponse]]


async def send_signed(
    state: SessionState,
    send: Send,
    extra: dict[str, str],
    flow: AuthFlow,
    *,
    with_session: bool = True,
    retry: bool = True,
    checked: bool = True,
) -> Sent:
    """Sign, send, and while the auth flow says so (a refused credential, renewed), send again: the one loop
    every request to the server takes (`upstream.auth` holds the rule). `send` makes the request from its
    headers; `retry=False` signs without ever asking the flow (each caller says why); `checked`: the answer is
    one `chctl check` reads (`last_answer`), not the server stream's. The caller releases the response."""
    while True:
        generation, in_session = state.generation, with_session and state.session_id is not None
        response = await send(flow.sign(state.headers(extra, with_session=with_session)))
        challenge = response.headers.get("WWW-Authenticate")
        if checked:
            state.last_answer = (response.status, challenge)
        try:
            again = retry and await flow.retry(response.status, challenge)
        except BaseException:
            response.release()
            raise
        if not again:
            return Sent(response, generation, in_session)
        response.release()


async def relay_stream(
    state: SessionState, response: aiohttp.ClientResponse, parser: SseParser, request: Message | None
) -> bool:
    """Relay an SSE stream's messages as they arrive; True once `request`'s response has come."""
    answered = False
    want = request.id if request is not None and request.is_request else None
    try:
        async with asyncio.timeout(None) as grace:
            async for chunk in response.content.iter_any():
                found, unreadable = await json_messages(parser.feed(chunk))
                if unreadable:
                    log.warning("upstream_sent_non_json_event", server=state.name, count=unreadable)
                for message in found:
                    if want is not None and not message.is_batch and message.id == want:
                        answered = message.is_response
                        if request is not None and request.method == "initialize":
                            state.protocol_version = messages.protocol_version_of(message)
                    await state.route(message)
                if answered and grace.when() is None:  # the server may close the stream now, not hold it
                    grace.reschedule(asyncio.get_running_loop().time() + limits.ANSWERED_STREAM_GRACE_S)
    except TimeoutError:
        if not answered:
            raise
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        log.info("upstream_stream_dropped", server=state.name, last_event_id=parser.last_event_id is not None)
    except limits.TooLarge:
        raise RelayFailure(limits.too_large(state.name)) from None
    return answered


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


def post_message(state: SessionState, body: Data | memoryview) -> Send:
    """POST `body` to the server's URL, once more if the server had closed the pooled connection before it read
    our request."""

    async def send(headers: dict[str, str]) -> aiohttp.ClientResponse:
        try:
            return await state.http.post(state.url, data=MessageBody(body), headers=headers, **_STREAMED)
        except aiohttp.ServerDisconnectedError:
            return await state.http.post(state.url, data=MessageBody(body), headers=headers, **_STREAMED)

    return send


def get_stream(state: SessionState) -> Send:
    """GET an SSE stream from the server's URL."""

    def send(headers: dict[str, str]) -> Awaitable[aiohttp.ClientResponse]:
        return state.http.get(state.url, headers=headers, **_STREAMED)

    return send


def same_origin(a: str, b: str) -> bool:
    """The legacy `endpoint` must stay on the server's own origin: our credential goes there."""
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)
