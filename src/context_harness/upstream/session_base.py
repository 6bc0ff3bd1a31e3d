"""What both transports share: the session's state at the server, the relaying of what it sends, and the
way to start the session over (which the session provides: `upstream.session`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog

from context_harness.net.failures import ReachKind
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.auth import AuthFlow, AuthPolicy
from context_harness.upstream.contract import Deliver, RelayFailure
from context_harness.upstream.sse import SseParser, json_messages

log = structlog.get_logger(__name__)

ACCEPT_BOTH = "application/json, text/event-stream"
# A tool may run for minutes and a stream stays open for hours: only connecting is bounded.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
CLOSE_TIMEOUT = aiohttp.ClientTimeout(total=5)


class SessionBase:
    """The upstream session as both transports see it (`Upstream` is the whole of it); the transports' `core`."""

    def __init__(self, name: str, url: str, http: aiohttp.ClientSession, auth: AuthPolicy, deliver: Deliver):
        self.name = name
        self.url = url
        self.http = http
        self.auth = auth
        self.deliver = deliver
        self.counters = auth.counters
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.generation = 0  # bumped by every re-initialization: requests that saw an older one retry
        self.closing = False
        self.waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}  # responses to our own requests
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
        """The request's headers, the session's and the credential current now."""
        headers = dict(extra)
        if with_session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if with_session and self.protocol_version and "MCP-Protocol-Version" not in headers:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return flow.sign(headers)

    async def incoming(self, message: Any) -> None:
        """A message from the server: to its waiter if it answers one of ours, else to the client."""
        if isinstance(message, list):  # a JSON-RPC batch
            for item in message:
                await self.incoming(item)
            return
        if not isinstance(message, dict):
            log.warning("upstream_sent_non_message", server=self.name)
            return
        key = messages.lookup_id(message.get("id")) if messages.is_response(message) else None
        waiter = self.waiters.get(key) if key is not None else None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(message)
            return
        await self.deliver(message)

    async def relay_stream(
        self, response: aiohttp.ClientResponse, parser: SseParser, request: dict[str, Any] | None
    ) -> bool:
        """Relay an SSE stream's messages as they arrive; True once `request`'s response has come."""
        answered = False
        want = request.get("id") if request is not None and messages.is_request(request) else None
        try:
            async with asyncio.timeout(None) as grace:
                async for chunk in response.content.iter_any():
                    found, unreadable = json_messages(parser.feed(chunk))
                    if unreadable:
                        log.warning("upstream_sent_non_json_event", server=self.name, count=unreadable)
                    for message in found:
                        if want is not None and isinstance(message, dict) and message.get("id") == want:
                            answered = messages.is_response(message)
                            if request is not None and request.get("method") == "initialize":
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
        return Failure(f"{self.name} answered HTTP {status} to the MCP transport", ErrorCode.NETWORK)


@contextlib.asynccontextmanager
async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST, once more if the server had closed the pooled connection before it read our request."""
    try:
        response = await http.post(url, data=body, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
    except aiohttp.ServerDisconnectedError:
        response = await http.post(url, data=body, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
    try:
        yield response
    finally:
        response.release()


def same_origin(a: str, b: str) -> bool:
    """The legacy `endpoint` must stay on the server's own origin: our credential goes there."""
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)
