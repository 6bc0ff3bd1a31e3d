"""The legacy HTTP+SSE transport (MCP 2024-11-05), for servers that do not speak Streamable HTTP: a GET stream
names, in its `endpoint` event, where messages are POSTed; every answer comes on that stream. Functions of the
session's state (`SessionState`): what to do when the stream ends or the endpoint forgets the session is the
caller's, from what they return. It knows no authentication rule (`upstream.auth`): every request goes through
`send_signed`.

Concurrency: asyncio, as aiohttp's is."""

from __future__ import annotations

from collections.abc import Awaitable
from urllib.parse import urljoin

import aiohttp
import structlog

from context_harness.upstream import limits
from context_harness.upstream.auth import AuthFlow
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.messages import MAX_ROUTED_BYTES, Message
from context_harness.upstream.session_base import (
    MessageBody,
    Posted,
    SessionLost,
    SessionState,
    get_stream,
    refused_by,
    relay_stream,
    same_origin,
    send_signed,
)
from context_harness.upstream.sse import SseParser

log = structlog.get_logger(__name__)


async def connect(state: SessionState) -> tuple[aiohttp.ClientResponse, SseParser]:
    """GET the SSE stream and wait for its `endpoint` event (kept in `state.endpoint`): the stream, open, for
    the caller to keep reading (`read`)."""
    extra = {"Accept": "text/event-stream"}
    sent = await send_signed(state, get_stream(state), extra, state.auth.flow(), with_session=False)
    response = sent.response
    if response.status != 200:
        response.release()
        limits.not_redirected(state.name, response)
        raise RelayFailure(refused_by(state.name, response.status))
    parser = SseParser()
    endpoint: str | None = None
    try:
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if event.event == "endpoint" and len(event.data) <= MAX_ROUTED_BYTES:
                    endpoint = urljoin(state.url, bytes(event.data).decode("utf-8", errors="replace").strip())
            if endpoint:
                break
    except limits.TooLarge:
        response.release()
        raise RelayFailure(limits.too_large(state.name)) from None
    if endpoint is None or not same_origin(endpoint, state.url):
        response.release()
        raise RelayFailure(refused_by(state.name, 200))
    state.endpoint = endpoint
    return response, parser


async def read(
    state: SessionState, response: aiohttp.ClientResponse, parser: SseParser, generation: int
) -> SessionLost | None:
    """Relay the stream's messages until it ends. SessionLost: it ended while the session was at `generation`
    (and not closing), so the session is gone with it."""
    try:
        await relay_stream(state, response, parser, None)
    except RelayFailure as exc:  # a message past the limit: this stream is done
        log.warning("upstream_legacy_stream_refused", server=state.name, reason=exc.failure.error)
    finally:
        response.release()
    if state.closing or generation != state.generation:
        return None
    log.info("upstream_legacy_stream_ended", server=state.name)
    return SessionLost(generation)


async def post(
    state: SessionState, message: Message, flow: AuthFlow, *, may_reinitialize: bool
) -> Posted | SessionLost:
    """POST one message to the stream's endpoint (`state.endpoint`, which the caller makes sure of); its response
    comes on the stream. SessionLost (only when `may_reinitialize`): the endpoint forgot the session."""

    def send(headers: dict[str, str]) -> Awaitable[aiohttp.ClientResponse]:
        assert state.endpoint is not None
        body = MessageBody(message.body)
        timeout = limits.REQUEST_TIMEOUT
        return state.http.post(state.endpoint, data=body, headers=headers, timeout=timeout, allow_redirects=False)

    sent = await send_signed(state, send, {"Content-Type": "application/json"}, flow, with_session=False)
    async with sent.response as response:
        limits.not_redirected(state.name, response)
    status = sent.response.status
    # A 404 or 400: the session behind this endpoint is gone.
    if status in (404, 400) and message.method != "initialize" and may_reinitialize:
        return SessionLost(sent.generation)
    if status >= 400:
        raise RelayFailure(refused_by(state.name, status))
    return Posted.DONE  # the response comes on the stream
