"""The Streamable HTTP transport: every message is a POST to the server's URL, answered with JSON or an SSE
stream; the server's own messages come on a GET stream. It knows no authentication rule (`upstream.auth`)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import structlog

from context_harness.primitives.json_scan import NotJson
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.core import ACCEPT_BOTH, CLOSE_TIMEOUT, STREAM_TIMEOUT, Core, post, refused_by
from context_harness.upstream.messages import Message
from context_harness.upstream.sse import SseParser

log = structlog.get_logger(__name__)

# The server-initiated stream reconnects after a drop with this backoff (seconds, doubling, capped).
LISTEN_BACKOFF_S = (0.5, 30.0)
# HTTP statuses a server that only speaks the legacy HTTP+SSE transport answers a POST of `initialize` with.
LEGACY_HINT_STATUSES = {400, 404, 405}


class Streamable:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def post(self, message: Message) -> bool:
        """POST one message and relay what comes back. True: the server wants the legacy transport."""
        core = self.core
        is_initialize = message.method == "initialize"
        auth = core.auth.flow()
        reinitialized = False
        while True:
            generation = core.generation
            extra = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
            extra.update(messages.routing_headers(message, None if is_initialize else core.protocol_version))
            # The session this request is sent in, not the one held when its answer comes: a re-initialization
            # begun meanwhile (by the listener) leaves no session id until it ends.
            in_session = not is_initialize and core.session_id is not None
            headers = core.headers(extra, auth, with_session=not is_initialize)
            async with post(core.http, core.url, message.body, headers) as response:
                status = core.answered(response)
                limits.not_redirected(core.name, response)
                if await auth.retry(status, response.headers.get("WWW-Authenticate")):
                    continue
                if status == 404 and in_session and not reinitialized:
                    reinitialized = True  # the session is lost: initialized again, once for this message
                    await core.reinitialize(generation)
                    continue
                if is_initialize and core.transport is None and status in LEGACY_HINT_STATUSES:
                    return True
                if status == 202:
                    return False
                if status >= 400:
                    await self._relay_error_body(message, response)
                    return False
                if is_initialize:
                    core.transport = "streamable-http"
                    core.session_id = response.headers.get("Mcp-Session-Id") or None
                await self._relay_body(message, response)
            return False

    async def end(self) -> None:
        """End the session at the server (DELETE), when there is one."""
        core = self.core
        if not core.session_id:
            return
        try:
            headers = core.headers({}, core.auth.flow())
            delete = core.http.delete(core.url, headers=headers, timeout=CLOSE_TIMEOUT, allow_redirects=False)
            async with delete as response:
                log.info("upstream_session_deleted", server=core.name, status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("upstream_session_delete_failed", server=core.name, error=type(exc).__name__)

    async def _relay_body(self, request: Message, response: aiohttp.ClientResponse) -> None:
        core = self.core
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/event-stream"):
            parser = SseParser()
            answered = await core.relay_stream(response, parser, request)
            if not answered and request.is_request:
                await self._resume(request, parser)
            return
        try:
            raw = await limits.read_body(response)
        except limits.TooLarge:
            raise RelayFailure(limits.too_large(core.name)) from None
        if not raw or raw.isspace():
            return
        try:
            reply = await Message.read(raw)
        except NotJson:
            raise RelayFailure(Failure(f"{core.name} sent a reply that is not JSON", ErrorCode.NETWORK)) from None
        if request.method == "initialize" and not reply.is_batch:
            core.protocol_version = messages.protocol_version_of(reply)
        await core.incoming(reply)

    async def _resume(self, request: Message, parser: SseParser) -> None:
        """A POST's stream ended before its response: reconnect with Last-Event-ID after the wait the stream's
        `retry:` field asks for (SEP-1699), for as long as each connection brings new events."""
        core = self.core
        while parser.last_event_id is not None:
            seen = parser.last_event_id
            await asyncio.sleep(limits.reconnect_delay_s(parser.reconnect_ms))
            headers = core.headers({"Accept": "text/event-stream", "Last-Event-ID": seen}, core.auth.flow())
            get = core.http.get(core.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
            async with get as response:
                limits.not_redirected(core.name, response)
                if response.status != 200:
                    raise RelayFailure(
                        Failure(
                            f"{core.name} closed the response stream and refused to resume it (HTTP {response.status})",
                            ErrorCode.NETWORK,
                            "send the request again",
                        )
                    )
                parser = parser.resumed()
                if await core.relay_stream(response, parser, request):
                    return
            if parser.last_event_id == seen:
                break
        raise RelayFailure(
            Failure(
                f"{core.name} closed the response stream before answering", ErrorCode.NETWORK, "send the request again"
            )
        )

    async def _relay_error_body(self, request: Message, response: aiohttp.ClientResponse) -> None:
        """A 4xx/5xx: pass on a JSON-RPC error the server sent for this request, else answer the request
        ourselves, with the server's own words (a JSON-RPC error without an id, the start of a page)."""
        raw: bytes | bytearray = b""
        with contextlib.suppress(NotJson, limits.TooLarge):
            raw = await limits.read_body(response, limits.MAX_ERROR_BODY_BYTES)
            reply = await Message.read(raw)
            if not reply.is_batch and reply.has("error") and reply.id is not None:
                await self.core.incoming(reply)
                return
        raise RelayFailure(refused_by(self.core.name, response.status, messages.server_words(bytes(raw))))

    def start_listening(self) -> None:
        core = self.core
        if core.listener is not None and not core.listener.done() and core.listener_generation == core.generation:
            return
        core.listen_with(self._listen(core.generation))

    async def _listen(self, generation: int) -> None:
        """The GET stream on which the server sends messages of its own; reconnects after a drop."""
        core = self.core
        delay, cap = LISTEN_BACKOFF_S
        auth = core.auth.flow(counted=False)
        parser = SseParser()
        while not core.closing and generation == core.generation and core.transport == "streamable-http":
            extra = {"Accept": "text/event-stream"}
            if parser.last_event_id:
                extra["Last-Event-ID"] = parser.last_event_id
            headers = core.headers(extra, auth)
            try:
                get = core.http.get(core.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
                async with get as response:
                    if response.status == 405 or (response.status in (400, 404) and not core.session_id):
                        return  # this server has no stream of its own (a server without sessions says 400 or 404)
                    if await auth.retry(response.status, response.headers.get("WWW-Authenticate")):
                        continue
                    if response.status == 404:
                        core.reinitialize_soon(generation)  # which starts a new listener
                        return
                    if response.status == 200:
                        delay, auth = LISTEN_BACKOFF_S[0], core.auth.flow(counted=False)
                        await core.relay_stream(response, parser, None)
                        parser = parser.resumed()  # closed by the server: back after its `retry` (SEP-1699)
                        await asyncio.sleep(limits.reconnect_delay_s(parser.reconnect_ms, delay))
                        continue
                    log.info("upstream_listen_refused", server=core.name, status=response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("upstream_listen_failed", server=core.name, error=type(exc).__name__)
            except RelayFailure:
                return  # refused even after a renewal, or too large: the next request says what to do
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
