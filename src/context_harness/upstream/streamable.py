"""The Streamable HTTP transport: every message is a POST to the server's URL, answered with JSON or an SSE
stream; the server's own messages come on a GET stream. Functions of the session's state (`SessionState`):
what to do next (initialize again, fall back to the legacy transport) is the caller's, from what they return.
It knows no authentication rule (`upstream.auth`): every request goes through `send_signed`.

Concurrency: asyncio, as aiohttp's is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import aiohttp
import structlog

from context_harness.primitives.json_scan import NotJson
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.auth import AuthFlow
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.session_base import (
    ACCEPT_BOTH,
    CLOSE_TIMEOUT,
    Posted,
    SessionLost,
    SessionState,
    get_stream,
    post_message,
    refused_by,
    relay_stream,
    send_signed,
)
from context_harness.upstream.sse import SseParser

log = structlog.get_logger(__name__)

# The server-initiated stream reconnects after a drop with this backoff (seconds, doubling, capped).
LISTEN_BACKOFF_S = (0.5, 30.0)
# HTTP statuses a server that only speaks the legacy HTTP+SSE transport answers a POST of `initialize` with.
LEGACY_HINT_STATUSES = {400, 404, 405}


async def post(
    state: SessionState, message: Message, flow: AuthFlow, *, may_reinitialize: bool
) -> Posted | SessionLost:
    """POST one message and relay what comes back. SessionLost (only when `may_reinitialize`): the server forgot
    the session the message was sent in; Posted.LEGACY: the server wants the legacy transport."""
    is_initialize = message.method == "initialize"
    extra = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json", **messages.routing_headers(message, None)}
    sent = await send_signed(state, post_message(state, message.body), extra, flow, with_session=not is_initialize)
    response = sent.response
    try:
        limits.not_redirected(state.name, response)
        status = response.status
        # Sent in a session, not "a session is held now": a re-initialization begun meanwhile (by the server's
        # stream) holds none until it ends, and the message must still be sent again.
        if status == 404 and sent.in_session and may_reinitialize:
            return SessionLost(sent.generation)
        if is_initialize and state.transport is None and status in LEGACY_HINT_STATUSES:
            return Posted.LEGACY
        if status == 202:
            return Posted.DONE
        if status >= 400:
            await _relay_error_body(state, response)
            return Posted.DONE
        if is_initialize:
            state.transport = "streamable-http"
            state.session_id = response.headers.get("Mcp-Session-Id") or None
        await _relay_body(state, message, response)
        return Posted.DONE
    finally:
        response.release()


async def end(state: SessionState) -> None:
    """End the session at the server (DELETE), when there is one."""
    if not state.session_id:
        return

    def delete(headers: dict[str, str]) -> Awaitable[aiohttp.ClientResponse]:
        return state.http.delete(state.url, headers=headers, timeout=CLOSE_TIMEOUT, allow_redirects=False)

    try:
        # Signed, never renewed: the client is gone and nobody waits for this answer.
        sent = await send_signed(state, delete, {}, state.auth.flow(), retry=False, checked=False)
        async with sent.response as response:
            log.info("upstream_session_deleted", server=state.name, status=response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("upstream_session_delete_failed", server=state.name, error=type(exc).__name__)


async def _relay_body(state: SessionState, request: Message, response: aiohttp.ClientResponse) -> None:
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/event-stream"):
        parser = SseParser()
        answered = await relay_stream(state, response, parser, request)
        if not answered and request.is_request:
            await _resume(state, request, parser)
        return
    try:
        raw = await limits.read_body(response)
    except limits.TooLarge:
        raise RelayFailure(limits.too_large(state.name)) from None
    if not raw or raw.isspace():
        return
    try:
        reply = await Message.read(raw)
    except NotJson:
        raise RelayFailure(Failure(f"{state.name} sent a reply that is not JSON", ErrorCode.NETWORK)) from None
    if request.method == "initialize" and not reply.is_batch:
        state.protocol_version = messages.protocol_version_of(reply)
    await state.route(reply)


async def _resume(state: SessionState, request: Message, parser: SseParser) -> None:
    """A POST's stream ended before its response: reconnect with Last-Event-ID after the wait the stream's
    `retry:` field asks for (SEP-1699), for as long as each connection brings new events."""
    while parser.last_event_id is not None:
        seen = parser.last_event_id
        await asyncio.sleep(limits.reconnect_delay_s(parser.reconnect_ms))
        extra = {"Accept": "text/event-stream", "Last-Event-ID": seen}
        # Signed, never renewed: a refused resume fails the request with "send it again", and the request sent
        # again is renewed on its POST.
        sent = await send_signed(state, get_stream(state), extra, state.auth.flow(), retry=False, checked=False)
        async with sent.response as response:
            limits.not_redirected(state.name, response)
            if response.status != 200:
                raise RelayFailure(
                    Failure(
                        f"{state.name} closed the response stream and refused to resume it (HTTP {response.status})",
                        ErrorCode.NETWORK,
                        "send the request again",
                    )
                )
            parser = parser.resumed()
            if await relay_stream(state, response, parser, request):
                return
        if parser.last_event_id == seen:
            break
    raise RelayFailure(
        Failure(
            f"{state.name} closed the response stream before answering", ErrorCode.NETWORK, "send the request again"
        )
    )


async def _relay_error_body(state: SessionState, response: aiohttp.ClientResponse) -> None:
    """A 4xx/5xx: pass on a JSON-RPC error the server sent for this request, else answer the request
    ourselves, with the server's own words (a JSON-RPC error without an id, the start of a page)."""
    raw: bytes | bytearray = b""
    with contextlib.suppress(NotJson, limits.TooLarge):
        raw = await limits.read_body(response, limits.MAX_ERROR_BODY_BYTES)
        reply = await Message.read(raw)
        if not reply.is_batch and reply.has("error") and reply.id is not None:
            await state.route(reply)
            return
    raise RelayFailure(refused_by(state.name, response.status, messages.server_words(bytes(raw))))


async def listen(state: SessionState, generation: int) -> SessionLost | None:
    """Read the GET stream on which the server sends messages of its own, reconnecting after a drop, for as long
    as the session is at `generation`. SessionLost: the server forgot the session."""
    delay, cap = LISTEN_BACKOFF_S
    flow = state.auth.flow(counted=False)
    parser = SseParser()
    while not state.closing and generation == state.generation and state.transport == "streamable-http":
        extra = {"Accept": "text/event-stream"}
        if parser.last_event_id:
            extra["Last-Event-ID"] = parser.last_event_id
        try:
            sent = await send_signed(state, get_stream(state), extra, flow, checked=False)
            async with sent.response as response:
                if response.status == 405 or (response.status in (400, 404) and not state.session_id):
                    return None  # this server has no stream of its own (a server without sessions says 400 or 404)
                if response.status == 404:
                    return SessionLost(generation)
                if response.status == 200:
                    delay, flow = LISTEN_BACKOFF_S[0], state.auth.flow(counted=False)
                    await relay_stream(state, response, parser, None)
                    parser = parser.resumed()  # closed by the server: back after its `retry` (SEP-1699)
                    await asyncio.sleep(limits.reconnect_delay_s(parser.reconnect_ms, delay))
                    continue
                log.info("upstream_listen_refused", server=state.name, status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("upstream_listen_failed", server=state.name, error=type(exc).__name__)
        except RelayFailure:
            return None  # refused even after a renewal, or too large: the next request says what to do
        await asyncio.sleep(delay)
        delay = min(delay * 2, cap)
    return None
