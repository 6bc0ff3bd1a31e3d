"""SEP-1699: a server that closes an SSE response stream gracefully before the response is asking the client to
reconnect — after the stream's `retry:` milliseconds, with Last-Event-ID. The upstream session, against our own
aiohttp server (it records when and how the client came back)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from context_harness.primitives.result import Result, Success
from context_harness.upstream import limits, streamable
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.session import Upstream
from context_harness.upstream.sse import SseParser
from tests.oauth_fakes import serve

RETRY_MS = 400
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow", "arguments": {}}}


class PollingServer:
    """Answers a tool call with an SSE stream that holds only a priming event (`id`, `retry`) and closes it; the
    response comes on the GET that resumes it — or, with `answer=False`, that stream closes empty too."""

    def __init__(self, *, answer: bool = True) -> None:
        self.answer = answer
        self.closed_at = 0.0
        self.resumes: list[tuple[float, str | None]] = []  # (when, Last-Event-ID)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/mcp", self.post)
        app.router.add_get("/mcp", self.get)
        return app

    async def post(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        await stream.write(f"id: e1\nretry: {RETRY_MS}\ndata: \n\n".encode())
        await stream.write_eof()
        self.closed_at = time.monotonic()
        return stream

    async def get(self, request: web.Request) -> web.StreamResponse:
        self.resumes.append((time.monotonic(), request.headers.get("Last-Event-ID")))
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        if self.answer:
            reply = {"jsonrpc": "2.0", "id": CALL["id"], "result": {"content": []}}
            await stream.write(f"id: e2\ndata: {json.dumps(reply)}\n\n".encode())
        await stream.write_eof()
        return stream


class NoCredential:
    def header(self) -> tuple[str, str] | None:
        return None

    async def renew(self, rejected: str | None) -> Result[None]:
        return Success(None)

    async def answered(self, status: int, sent: str | None) -> None:
        pass


@asynccontextmanager
async def session_with(server: PollingServer) -> AsyncIterator[tuple[Upstream, list[Message]]]:
    delivered: list[Message] = []

    async def deliver(message: Message) -> None:
        delivered.append(message)

    async with serve(server.app()) as base, aiohttp.ClientSession() as http:
        upstream = Upstream("polling", base + "/mcp", http, NoCredential(), deliver)
        upstream.state.transport = "streamable-http"
        try:
            yield upstream, delivered
        finally:
            await upstream.close()


async def post(upstream: Upstream, message: Message) -> None:
    await streamable.post(upstream.state, message, upstream.state.auth.flow(), may_reinitialize=True)


async def test_a_gracefully_closed_stream_is_resumed_after_its_retry_with_last_event_id() -> None:
    server = PollingServer()
    async with session_with(server) as (upstream, delivered):
        await asyncio.wait_for(post(upstream, await Message.of(CALL)), 20)
    assert [reply.id for reply in delivered] == [CALL["id"]]
    [(resumed_at, last_event_id)] = server.resumes
    assert last_event_id == "e1"
    assert resumed_at - server.closed_at >= RETRY_MS / 1000 - 0.05  # it waited (it was 1 ms before SEP-1699)


async def test_a_resumed_stream_that_brings_nothing_ends_in_an_error_not_a_hang() -> None:
    server = PollingServer(answer=False)
    async with session_with(server) as (upstream, _delivered):
        with pytest.raises(RelayFailure) as failed:
            await asyncio.wait_for(post(upstream, await Message.of(CALL)), 20)
    assert "polling closed the response stream before answering" in failed.value.failure.error
    assert len(server.resumes) == 1


def test_the_retry_field_sets_the_streams_reconnection_time_and_a_huge_one_is_capped() -> None:
    parser = SseParser()
    parser.feed(b"retry: 1500\nid: a\ndata: \n\n: a comment\n\ndata: {}\n\n")
    assert parser.reconnect_ms == 1500  # it holds for the stream, not only for the event that carried it
    assert parser.resumed().reconnect_ms == 1500 and parser.resumed().last_event_id == "a"
    assert limits.reconnect_delay_s(1500) == 1.5
    assert limits.reconnect_delay_s(10**12) == limits.MAX_RECONNECT_DELAY_S
    assert limits.reconnect_delay_s(None, 0.5) == 0.5
