"""One MCP session with a remote server, on behalf of one bridged client.

The client's messages arrive here one by one and go upstream over Streamable HTTP, or over the legacy
HTTP+SSE transport when the server does not speak it (the same fallback opencode makes). Whatever the server
sends — JSON replies, SSE streams, server-initiated requests — goes back to the client as it arrives.

What the client never sees:
- a 401: every request carries the credential current at send time; a 401 renews it once (single flight
  with the refresher, see `Credentials.renew`) and the request is sent again;
- a lost session (404 on a known `Mcp-Session-Id`, a dropped legacy stream, a daemon restart): the session
  is initialized again by replaying the client's own `initialize` and `notifications/initialized`, and the
  request is sent again;
- an OAuth prompt: when only a person can help, the request gets a JSON-RPC error saying what to run.

What a server can make it spend is bounded (`upstream.limits`): no redirect is followed, no message passes
the relay's limit, re-initializations back off, a request the client cancels or abandons is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog

from context_harness.net.failures import ReachKind, reach_kind, unreachable
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.contract import Counters, Credentials, Deliver, RelayFailure, Retries
from context_harness.upstream.sse import SseParser, json_messages

log = structlog.get_logger(__name__)

ACCEPT_BOTH = "application/json, text/event-stream"
# A tool may run for minutes and a stream stays open for hours: only connecting is bounded.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
CLOSE_TIMEOUT = aiohttp.ClientTimeout(total=5)
# The server-initiated stream reconnects after a drop with this backoff (seconds, doubling, capped).
LISTEN_BACKOFF_S = (0.5, 30.0)
# HTTP statuses a server that only speaks the legacy HTTP+SSE transport answers a POST of `initialize` with.
LEGACY_HINT_STATUSES = {400, 404, 405}


class Upstream:
    def __init__(self, name: str, url: str, http: aiohttp.ClientSession, credentials: Credentials, deliver: Deliver):
        self.name = name
        self.url = url
        self.http = http
        self.credentials = credentials
        self.deliver = deliver
        self.transport: Literal["streamable-http", "sse"] | None = None
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.counters = Counters()
        self._init_request: dict[str, Any] | None = None
        self._initialized_note: dict[str, Any] | None = None
        self._generation = 0  # bumped by every re-initialization: requests that saw an older one retry
        self._reinit_lock = asyncio.Lock()
        self._internal_ids = itertools.count(1)
        self._waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}  # responses to our own requests
        self._carrying = limits.Cancellable()  # the client's requests, by id
        self._reinit_budget = limits.ReinitBudget()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None  # the server's own stream (both transports)
        self._listener_generation = -1
        self._ready = asyncio.Event()  # cleared while the session is being initialized again
        self._ready.set()
        self._sse_endpoint: str | None = None  # legacy transport: where messages are POSTed
        self._closing = False
        # For `chctl check`: the server's last HTTP status and WWW-Authenticate, and where a request last failed.
        self.last_answer: tuple[int, str | None] | None = None
        self.last_reach_failure: ReachKind | None = None

    # --- the bridge's side -----------------------------------------------------------------------------

    def submit(self, message: dict[str, Any], raw: bytes | None = None) -> None:
        """Carry one client message upstream, concurrently with the others (a long tool call blocks nothing).
        `raw` is the message as the client wrote it: sent as it is."""
        if messages.is_request(message):
            self.counters.requests += 1
            if message.get("method") == "initialize":
                self._init_request = message
        elif message.get("method") == "notifications/initialized":
            self._initialized_note = message
        elif message.get("method") == "notifications/cancelled":
            self._carrying.cancel(message.get("params"))  # and the server is told, too
        task = asyncio.get_running_loop().create_task(self._carry(message, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if messages.is_request(message):
            self._carrying.add(message.get("id"), task)

    async def restore(self, replay: list[dict[str, Any]]) -> None:
        """A bridge whose session began before a daemon restart: initialize upstream again from the client's
        own `initialize` and `notifications/initialized`, answering nothing to the client."""
        for message in replay:
            if message.get("method") == "initialize" and messages.is_request(message):
                self._init_request = message
            elif message.get("method") == "notifications/initialized":
                self._initialized_note = message
        if self._init_request is None:
            return
        try:
            await self._reinitialize(self._generation)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.counters.last_error = unreachable(self.name, exc).error
            log.warning("bridge_restore_failed", server=self.name, reason=self.counters.last_error)
        except RelayFailure as exc:
            # The next request tries again and reports the reason to the client.
            self.counters.last_error = exc.failure.error
            log.warning("bridge_restore_failed", server=self.name, reason=exc.failure.error)

    async def close(self) -> None:
        """The client went away: stop everything and end the session at the server."""
        self._closing = True
        for task in [*self._tasks, *([self._listener] if self._listener else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transport == "streamable-http" and self.session_id:
            try:
                headers, _used = self._headers({})
                delete = self.http.delete(self.url, headers=headers, timeout=CLOSE_TIMEOUT, allow_redirects=False)
                async with delete as response:
                    log.info("upstream_session_deleted", server=self.name, status=response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("upstream_session_delete_failed", server=self.name, error=type(exc).__name__)

    # --- carrying one message --------------------------------------------------------------------------

    async def _carry(self, message: dict[str, Any], raw: bytes | None) -> None:
        try:
            await self._send(message, raw=raw)
        except RelayFailure as exc:
            self._fail(message, exc.failure)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_reach_failure = reach_kind(exc)
            self._fail(message, unreachable(self.name, exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay_message_crashed", server=self.name)
            self._fail(message, Failure("internal error in context-harnessd's relay", ErrorCode.INTERNAL))

    def _fail(self, message: dict[str, Any], failure: Failure) -> None:
        self.counters.last_error = failure.error
        log.warning("relay_request_failed", server=self.name, method=message.get("method"), reason=failure.error)
        if messages.is_request(message) and not self._closing:
            reply = messages.error_response(message["id"], failure.error, failure.code.value, hint=failure.hint)
            task = asyncio.get_running_loop().create_task(self.deliver(reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, message: dict[str, Any], *, raw: bytes | None = None, internal: bool = False) -> None:
        if not internal:
            await self._ready.wait()
            if self.transport is None and self._init_request not in (None, message):
                # A session restored after a daemon restart that could not be initialized then: now.
                await self._reinitialize(self._generation)
        body = raw if raw is not None else json.dumps(message, separators=(",", ":")).encode()
        if self.transport == "sse":
            await self._post_legacy(message, body)
            return
        if await self._post_streamable(message, body):
            await self._switch_to_legacy()
            await self._post_legacy(message, body)
        elif message.get("method") == "notifications/initialized":
            self._start_listening()

    async def _internal(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Send a message of our own; for a request, wait for its response (kept from the client)."""
        if not messages.is_request(message):
            await self._send(message, internal=True)
            return None
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[message["id"]] = waiter
        try:
            await self._send(message, internal=True)
            return await asyncio.wait_for(waiter, timeout=60)
        finally:
            self._waiters.pop(message["id"], None)

    async def _incoming(self, message: Any) -> None:
        """A message from the server: to its waiter if it answers one of ours, else to the client."""
        if isinstance(message, list):  # a JSON-RPC batch
            for item in message:
                await self._incoming(item)
            return
        if not isinstance(message, dict):
            log.warning("upstream_sent_non_message", server=self.name)
            return
        key = messages.lookup_id(message.get("id")) if messages.is_response(message) else None
        waiter = self._waiters.get(key) if key is not None else None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(message)
            return
        await self.deliver(message)

    # --- Streamable HTTP -------------------------------------------------------------------------------

    async def _post_streamable(self, message: dict[str, Any], body: bytes) -> bool:
        """POST one message and relay what comes back. True: the server wants the legacy transport."""
        is_initialize = message.get("method") == "initialize"
        retries = Retries()
        while True:
            generation = self._generation
            extra = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
            extra.update(messages.routing_headers(message, None if is_initialize else self.protocol_version))
            headers, used = self._headers(extra, with_session=not is_initialize)
            async with _post(self.http, self.url, body, headers) as response:
                status = self._answered(response)
                limits.not_redirected(self.name, response)
                session_lost = status == 404 and not is_initialize and bool(self.session_id)
                if await self._recovered(status, used, generation, retries, session_lost=session_lost):
                    continue
                if is_initialize and self.transport is None and status in LEGACY_HINT_STATUSES:
                    return True
                if status == 202:
                    return False
                if status >= 400:
                    await self._relay_error_body(message, response)
                    return False
                if is_initialize:
                    self.transport = "streamable-http"
                    self.session_id = response.headers.get("Mcp-Session-Id") or None
                await self._relay_body(message, response)
            return False

    async def _relay_body(self, request: dict[str, Any], response: aiohttp.ClientResponse) -> None:
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/event-stream"):
            parser = SseParser()
            answered = await self._relay_stream(response, parser, request)
            if answered or not messages.is_request(request):
                return
            if parser.last_event_id is None:
                raise RelayFailure(
                    Failure(f"{self.name} closed the response stream before answering", ErrorCode.NETWORK, "try again")
                )
            await self._resume(request, parser.last_event_id)
            return
        try:
            raw = await limits.read_body(response)
        except limits.TooLarge:
            raise RelayFailure(limits.too_large(self.name)) from None
        if not raw.strip():
            return
        try:
            reply = json.loads(raw)
        except ValueError:
            raise RelayFailure(Failure(f"{self.name} sent a reply that is not JSON", ErrorCode.NETWORK)) from None
        if request.get("method") == "initialize" and isinstance(reply, dict):
            self.protocol_version = messages.protocol_version_of(reply)
        await self._incoming(reply)

    async def _relay_stream(
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
                        await self._incoming(message)
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

    async def _resume(self, request: dict[str, Any], last_event_id: str) -> None:
        """A POST's stream dropped before its response: pick it up where it broke (Last-Event-ID)."""
        headers, _used = self._headers({"Accept": "text/event-stream", "Last-Event-ID": last_event_id})
        async with self.http.get(self.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False) as response:
            limits.not_redirected(self.name, response)
            if response.status != 200:
                raise RelayFailure(
                    Failure(f"{self.name} dropped the response stream and cannot resume it", ErrorCode.NETWORK)
                )
            parser = SseParser()
            parser.last_event_id = last_event_id
            if not await self._relay_stream(response, parser, request) and parser.last_event_id != last_event_id:
                await self._resume(request, parser.last_event_id or last_event_id)

    async def _relay_error_body(self, request: dict[str, Any], response: aiohttp.ClientResponse) -> None:
        """A 4xx/5xx: pass on a JSON-RPC error the server sent, else answer the request ourselves."""
        with contextlib.suppress(ValueError, limits.TooLarge):
            raw = await limits.read_body(response, limits.MAX_ERROR_BODY_BYTES)
            reply = json.loads(raw)
            if isinstance(reply, dict) and "error" in reply and reply.get("id") is not None:
                await self._incoming(reply)
                return
        raise RelayFailure(
            Failure(f"{self.name} answered HTTP {response.status}", ErrorCode.NETWORK, "see `chctl logs`")
        )

    def _start_listening(self) -> None:
        if self._listener is not None and not self._listener.done():
            if self._listener_generation == self._generation:
                return
            self._listener.cancel()
        self._listener_generation = self._generation
        self._listener = asyncio.get_running_loop().create_task(self._listen(self._generation))

    async def _listen(self, generation: int) -> None:
        """The GET stream on which the server sends messages of its own; reconnects after a drop."""
        delay, cap = LISTEN_BACKOFF_S
        renewed_once = False
        parser = SseParser()
        while not self._closing and generation == self._generation and self.transport == "streamable-http":
            extra = {"Accept": "text/event-stream"}
            if parser.last_event_id:
                extra["Last-Event-ID"] = parser.last_event_id
            headers, used = self._headers(extra)
            try:
                get = self.http.get(self.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
                async with get as response:
                    if response.status == 405:
                        return  # this server has no stream of its own
                    if response.status == 401:
                        if renewed_once or isinstance(await self.credentials.renew(used), Failure):
                            return  # refused even after a renewal: the next request says what to do
                        renewed_once = True
                        continue
                    if response.status == 404:
                        self._reinitialize_soon(generation)  # which starts a new listener
                        return
                    if response.status == 200:
                        delay, renewed_once = LISTEN_BACKOFF_S[0], False
                        await self._relay_stream(response, parser, None)
                        continue
                    log.info("upstream_listen_refused", server=self.name, status=response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("upstream_listen_failed", server=self.name, error=type(exc).__name__)
            except RelayFailure:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)

    # --- the legacy HTTP+SSE transport ------------------------------------------------------------------

    async def _switch_to_legacy(self) -> None:
        if self.transport != "sse":
            self.transport = "sse"
            log.info("upstream_transport_legacy_sse", server=self.name)
            await self._connect_legacy()

    async def _connect_legacy(self) -> None:
        """GET the SSE stream, wait for its `endpoint` event, and keep reading it in the background."""
        if self._listener is not None:
            self._listener.cancel()
        for attempt in range(2):
            headers, used = self._headers({"Accept": "text/event-stream"}, with_session=False)
            response = await self.http.get(self.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
            self._answered(response)
            if response.status == 401 and attempt == 0:
                response.release()
                await self._renew(used)
                continue
            if response.status != 200:
                response.release()
                limits.not_redirected(self.name, response)
                raise RelayFailure(self._refused() if response.status == 401 else self._unusable(response.status))
            break
        parser = SseParser()
        endpoint: str | None = None
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "endpoint":
                        endpoint = urljoin(self.url, event.data.strip())
                if endpoint:
                    break
        except limits.TooLarge:
            response.release()
            raise RelayFailure(limits.too_large(self.name)) from None
        if endpoint is None or not _same_origin(endpoint, self.url):
            response.release()
            raise RelayFailure(self._unusable(200))
        self._sse_endpoint = endpoint
        self._listener_generation = self._generation
        self._listener = asyncio.get_running_loop().create_task(self._read_legacy(response, parser, self._generation))

    async def _read_legacy(self, response: aiohttp.ClientResponse, parser: SseParser, generation: int) -> None:
        try:
            await self._relay_stream(response, parser, None)
        except RelayFailure as exc:  # a message past the limit: this stream is done
            log.warning("upstream_legacy_stream_refused", server=self.name, reason=exc.failure.error)
        finally:
            response.release()
        if not self._closing and generation == self._generation:
            log.info("upstream_legacy_stream_ended", server=self.name)
            self._reinitialize_soon(generation)

    async def _post_legacy(self, message: dict[str, Any], body: bytes) -> None:
        retries = Retries()
        while True:
            generation = self._generation
            if self._sse_endpoint is None:
                await self._reinitialize(generation)
                continue
            headers, used = self._headers({"Content-Type": "application/json"}, with_session=False)
            post = self.http.post(
                self._sse_endpoint, data=body, headers=headers, timeout=limits.REQUEST_TIMEOUT, allow_redirects=False
            )
            async with post as r:
                status = self._answered(r)
                limits.not_redirected(self.name, r)
            # A 404 or 400: the session behind this endpoint is gone.
            session_lost = status in (404, 400) and message.get("method") != "initialize"
            if await self._recovered(status, used, generation, retries, session_lost=session_lost):
                continue
            if status >= 400:
                raise RelayFailure(self._unusable(status))
            return  # the response comes on the stream

    # --- sessions and credentials -----------------------------------------------------------------------

    async def _recovered(
        self, status: int, used: str | None, generation: int, retries: Retries, *, session_lost: bool
    ) -> bool:
        """Whether a POST answered `status` is to be sent again, now that what it asked for is done: a 401
        renews the credential (a second 401 is final: RelayFailure), a lost session is initialized again."""
        if status == 401:
            if retries.renewed:
                raise RelayFailure(self._refused())
            retries.renewed = True
            await self._renew(used)
            return True
        if session_lost and not retries.reinitialized:
            retries.reinitialized = True
            await self._reinitialize(generation)
            return True
        return False

    async def _reinitialize(self, seen_generation: int) -> None:
        """Initialize the session again with the client's own handshake; once for all who saw it break."""
        async with self._reinit_lock:
            if seen_generation != self._generation:
                return  # someone else already did
            if self._init_request is None:
                raise RelayFailure(
                    Failure(f"{self.name} lost the session before it was initialized", ErrorCode.NETWORK, "reconnect")
                )
            delay = self._reinit_budget.delay()
            if delay is None:
                raise RelayFailure(limits.lost_too_often(self.name))
            self._generation += 1
            self.session_id = None
            self._ready.clear()
            try:
                await asyncio.sleep(delay)
                self._reinit_budget.spend()
                if self.transport == "sse":
                    await self._connect_legacy()
                request = {**self._init_request, "id": f"context-harness-{next(self._internal_ids)}"}
                reply = await self._internal(request)
                if reply is None or "error" in reply:
                    raise RelayFailure(Failure(f"{self.name} refused to initialize a new session", ErrorCode.NETWORK))
                self.protocol_version = messages.protocol_version_of(reply) or self.protocol_version
                note = self._initialized_note or {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await self._internal(note)
            finally:
                self._ready.set()
            self.counters.reinitializations += 1
            log.info("upstream_session_reinitialized", server=self.name, transport=self.transport)

    def _reinitialize_soon(self, seen_generation: int) -> None:
        """Re-initialize from a task of its own: the listener that noticed the loss is replaced by it."""

        async def run() -> None:
            try:
                await self._reinitialize(seen_generation)
            except (RelayFailure, aiohttp.ClientError, TimeoutError) as exc:
                self.counters.last_error = str(exc) or type(exc).__name__
                log.warning("upstream_reinitialize_failed", server=self.name, reason=self.counters.last_error)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renew(self, rejected: str | None) -> None:
        self.counters.renewals += 1
        renewed = await self.credentials.renew(rejected)
        if isinstance(renewed, Failure):
            raise RelayFailure(renewed)

    def _headers(self, extra: dict[str, str], *, with_session: bool = True) -> tuple[dict[str, str], str | None]:
        """The request's headers with the credential current now, and that credential's value."""
        headers = dict(extra)
        if with_session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if with_session and self.protocol_version and "MCP-Protocol-Version" not in headers:
            headers["MCP-Protocol-Version"] = self.protocol_version
        current = self.credentials.header()
        if current is None:
            return headers, None
        headers[current[0]] = current[1]
        return headers, current[1]

    def _answered(self, response: aiohttp.ClientResponse) -> int:
        self.last_answer = (response.status, response.headers.get("WWW-Authenticate"))
        return response.status

    def _refused(self) -> Failure:
        return Failure(
            f"{self.name} refused the credential even after a refresh",
            ErrorCode.AUTH_REQUIRED,
            f"run `chctl auth {self.name}`",
        )

    def _unusable(self, status: int) -> Failure:
        return Failure(f"{self.name} answered HTTP {status} to the MCP transport", ErrorCode.NETWORK)


@contextlib.asynccontextmanager
async def _post(
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


def _same_origin(a: str, b: str) -> bool:
    """The legacy `endpoint` must stay on the server's own origin: our credential goes there."""
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)
