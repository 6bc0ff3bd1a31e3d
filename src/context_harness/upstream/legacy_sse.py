"""The legacy HTTP+SSE transport (MCP 2024-11-05), for servers that do not speak Streamable HTTP: a GET stream
names, in its `endpoint` event, where messages are POSTed; every answer comes on that stream. It knows no
authentication rule (`upstream.auth`)."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp
import structlog

from context_harness.upstream import limits
from context_harness.upstream.contract import RelayFailure
from context_harness.upstream.core import STREAM_TIMEOUT, Core, MessageBody, same_origin
from context_harness.upstream.messages import MAX_ROUTED_BYTES, Message
from context_harness.upstream.sse import SseParser

log = structlog.get_logger(__name__)


class LegacySse:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.endpoint: str | None = None  # where messages are POSTed

    async def connect(self) -> None:
        """GET the SSE stream, wait for its `endpoint` event, and keep reading it in the background."""
        core = self.core
        if core.listener is not None:
            core.listener.cancel()
        auth = core.auth.flow()
        while True:
            headers = core.headers({"Accept": "text/event-stream"}, auth, with_session=False)
            response = await core.http.get(core.url, headers=headers, timeout=STREAM_TIMEOUT, allow_redirects=False)
            core.answered(response)
            if response.status == 200:
                break
            response.release()
            if await auth.retry(response.status, response.headers.get("WWW-Authenticate")):
                continue
            limits.not_redirected(core.name, response)
            raise RelayFailure(core.unusable(response.status))
        parser = SseParser()
        endpoint: str | None = None
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "endpoint" and len(event.data) <= MAX_ROUTED_BYTES:
                        endpoint = urljoin(core.url, bytes(event.data).decode("utf-8", errors="replace").strip())
                if endpoint:
                    break
        except limits.TooLarge:
            response.release()
            raise RelayFailure(limits.too_large(core.name)) from None
        if endpoint is None or not same_origin(endpoint, core.url):
            response.release()
            raise RelayFailure(core.unusable(200))
        self.endpoint = endpoint
        core.listen_with(self._read(response, parser, core.generation))

    async def _read(self, response: aiohttp.ClientResponse, parser: SseParser, generation: int) -> None:
        core = self.core
        try:
            await core.relay_stream(response, parser, None)
        except RelayFailure as exc:  # a message past the limit: this stream is done
            log.warning("upstream_legacy_stream_refused", server=core.name, reason=exc.failure.error)
        finally:
            response.release()
        if not core.closing and generation == core.generation:
            log.info("upstream_legacy_stream_ended", server=core.name)
            core.reinitialize_soon(generation)

    async def post(self, message: Message) -> None:
        core = self.core
        auth = core.auth.flow()
        reinitialized = False
        while True:
            generation = core.generation
            if self.endpoint is None:
                await core.reinitialize(generation)
                continue
            headers = core.headers({"Content-Type": "application/json"}, auth, with_session=False)
            body = MessageBody(message.body)
            request = core.http.post(
                self.endpoint, data=body, headers=headers, timeout=limits.REQUEST_TIMEOUT, allow_redirects=False
            )
            async with request as r:
                status = core.answered(r)
                limits.not_redirected(core.name, r)
                challenge = r.headers.get("WWW-Authenticate")
            if await auth.retry(status, challenge):
                continue
            # A 404 or 400: the session behind this endpoint is gone; initialized again, once for this message.
            if status in (404, 400) and message.method != "initialize" and not reinitialized:
                reinitialized = True
                await core.reinitialize(generation)
                continue
            if status >= 400:
                raise RelayFailure(core.unusable(status))
            return  # the response comes on the stream
