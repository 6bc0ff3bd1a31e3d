"""One MCP session with a remote server, on behalf of one bridged client.

The client's messages arrive here one by one and go upstream over Streamable HTTP (`upstream.streamable`),
or over the legacy HTTP+SSE transport (`upstream.legacy_sse`) when the server does not speak it (the same
fallback opencode makes). Whatever the server sends — JSON replies, SSE streams, server-initiated requests —
goes back to the client as it arrives.

What the client never sees:
- a refused credential: every request carries the credential current at send time and is renewed once when
  refused (`upstream.auth`, the one place that knows that rule);
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
from collections.abc import AsyncIterator

import aiohttp
import anyio
import anyio.abc
import structlog

from context_harness.net.failures import reach_kind, unreachable
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import limits, messages
from context_harness.upstream.auth import AuthPolicy
from context_harness.upstream.contract import Counters, Credentials, Deliver, RelayFailure
from context_harness.upstream.core import Core
from context_harness.upstream.legacy_sse import LegacySse
from context_harness.upstream.messages import Message
from context_harness.upstream.streamable import Streamable

log = structlog.get_logger(__name__)

# How long a request of our own waits for its answer.
OWN_REQUEST_TIMEOUT_S = 60
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


class Upstream(Core):
    def __init__(
        self,
        name: str,
        url: str,
        http: aiohttp.ClientSession,
        credentials: Credentials,
        deliver: Deliver,
        counters: Counters | None = None,  # the bridge's, kept in the server's state for `chctl status`
        headers: dict[str, str] | None = None,  # static headers for every request (not the credential)
    ):
        super().__init__(name, url, http, AuthPolicy(name, credentials, counters or Counters()), deliver)
        self.static_headers = dict(headers or {})
        self.streamable = Streamable(self)
        self.legacy = LegacySse(self)
        self._init_request: Message | None = None
        self._initialized_note: Message | None = None
        self._reinit_lock = asyncio.Lock()
        self._internal_ids = itertools.count(1)
        self._carrying = limits.Cancellable()  # the client's requests, by id
        self._reinit_budget = limits.ReinitBudget()
        self._ready = asyncio.Event()  # cleared while the session is being initialized again
        self._ready.set()
        self._group: anyio.abc.TaskGroup | None = None  # owns the client's messages (`carrying`)

    # --- the bridge's side -----------------------------------------------------------------------------

    def submit(self, message: Message) -> None:
        """Carry one client message upstream, as the client wrote it, concurrently with the others (a long tool
        call blocks nothing)."""
        if self._group is None:
            raise RuntimeError("Upstream.submit is for inside `async with upstream.carrying()`")
        self._remember(message)
        if message.is_request:
            self.counters.requests += 1
        elif message.method == "notifications/cancelled":
            self._carrying.cancel(message.get("params", "requestId"))  # and the server is told, too
        scope = anyio.CancelScope()  # registered now: a cancel in the same read as its request finds it
        if message.is_request:
            self._carrying.add(message.id, scope)
        self._group.start_soon(self._carry_within, scope, message)

    @contextlib.asynccontextmanager
    async def carrying(self) -> AsyncIterator[None]:
        """The client's messages are carried inside this, each by a task of one group: leaving it cancels
        whatever is still in flight (the client went away) and waits for it to stop."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self.closing = True
                self._group = None
                group.cancel_scope.cancel()

    async def restore(self, replay: list[Message]) -> None:
        """A bridge whose session began before a daemon restart: initialize upstream again from the client's
        own `initialize` and `notifications/initialized`, answering nothing to the client."""
        for message in replay:
            self._remember(message)
        if self._init_request is None:
            return
        try:
            await self.reinitialize(self.generation)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.counters.last_error = unreachable(self.name, exc).error
            log.warning("bridge_restore_failed", server=self.name, reason=self.counters.last_error)
        except RelayFailure as exc:
            # The next request tries again and reports the reason to the client.
            self.counters.last_error = exc.failure.error
            log.warning("bridge_restore_failed", server=self.name, reason=exc.failure.error)

    async def request(self, message: Message) -> Message | None:
        """Send a message of our own, not the client's: for a request, its answer (None for a notification).
        With `close`, this is a whole session for a check: `initialize`, `notifications/initialized`, one
        request, close. An `initialize` sent here is what a lost session is initialized again with."""
        self._remember(message)
        return await self._internal(message)

    def _remember(self, message: Message) -> None:
        """Keep the handshake: a lost session is initialized again with it."""
        if message.method == "initialize" and message.is_request:
            self._init_request = message
        elif message.method == "notifications/initialized":
            self._initialized_note = message

    async def close(self) -> None:
        """The client went away: stop everything and end the session at the server."""
        self.closing = True
        for task in [*self.tasks, *([self.listener] if self.listener else [])]:
            task.cancel()
        for task in [*self.tasks, *([self.listener] if self.listener else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transport == "streamable-http":
            await self.streamable.end()

    # --- carrying one message --------------------------------------------------------------------------

    async def _carry_within(self, scope: anyio.CancelScope, message: Message) -> None:
        with scope:
            try:
                await self._carry(message)
            finally:
                if message.is_request:
                    self._carrying.done(message.id, scope)

    async def _carry(self, message: Message) -> None:
        try:
            await self._send(message)
        except RelayFailure as exc:
            await self._fail(message, exc.failure)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_reach_failure = reach_kind(exc)
            await self._fail(message, unreachable(self.name, exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay_message_crashed", server=self.name)
            await self._fail(message, Failure("internal error in context-harnessd's relay", ErrorCode.INTERNAL))

    async def _fail(self, message: Message, failure: Failure) -> None:
        self.counters.last_error = failure.error
        log.warning("relay_request_failed", server=self.name, method=message.method, reason=failure.error)
        if message.is_request and not self.closing:
            reply = messages.error_response(message.id, failure.error, failure.code.value, hint=failure.hint)
            with contextlib.suppress(ConnectionError, OSError):  # the client is gone: nobody to tell
                await self.deliver(await Message.of(reply))

    async def _send(self, message: Message, *, internal: bool = False) -> None:
        if not internal:
            await self._ready.wait()
            if self.transport is None and self._init_request is not None and self._init_request is not message:
                # A session restored after a daemon restart that could not be initialized then: now.
                await self.reinitialize(self.generation)
        if self.transport == "sse":
            await self.legacy.post(message)
            return
        if await self.streamable.post(message):
            await self._switch_to_legacy()
            await self.legacy.post(message)
        elif message.method == "notifications/initialized":
            self.streamable.start_listening()

    async def _internal(self, message: Message) -> Message | None:
        """Send a message of our own; for a request, wait for its response (kept from the client)."""
        if not message.is_request:
            await self._send(message, internal=True)
            return None
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        key = message.id
        self.waiters[key] = waiter
        try:
            await self._send(message, internal=True)
            return await asyncio.wait_for(waiter, timeout=OWN_REQUEST_TIMEOUT_S)
        finally:
            self.waiters.pop(key, None)

    async def _switch_to_legacy(self) -> None:
        if self.transport != "sse":
            self.transport = "sse"
            log.info("upstream_transport_legacy_sse", server=self.name)
            await self.legacy.connect()

    # --- a lost session ---------------------------------------------------------------------------------

    async def reinitialize(self, seen_generation: int) -> None:
        """Initialize the session again with the client's own handshake; once for all who saw it break."""
        async with self._reinit_lock:
            if seen_generation != self.generation:
                return  # someone else already did
            if self._init_request is None:
                raise RelayFailure(
                    Failure(f"{self.name} lost the session before it was initialized", ErrorCode.NETWORK, "reconnect")
                )
            delay = self._reinit_budget.delay()
            if delay is None:
                raise RelayFailure(limits.lost_too_often(self.name))
            self.generation += 1
            self.session_id = None
            self._ready.clear()
            try:
                await asyncio.sleep(delay)
                self._reinit_budget.spend()
                if self.transport == "sse":
                    await self.legacy.connect()
                request = await self._init_request.with_id(f"context-harness-{next(self._internal_ids)}")
                reply = await self._internal(request)
                if reply is None or reply.has("error"):
                    raise RelayFailure(Failure(f"{self.name} refused to initialize a new session", ErrorCode.NETWORK))
                self.protocol_version = messages.protocol_version_of(reply) or self.protocol_version
                note = self._initialized_note or await Message.of(INITIALIZED)
                await self._internal(note)
            finally:
                self._ready.set()
            self.counters.reinitializations += 1
            log.info("upstream_session_reinitialized", server=self.name, transport=self.transport)

    def reinitialize_soon(self, seen_generation: int) -> None:
        """Re-initialize from a task of its own: the listener that noticed the loss is replaced by it."""

        async def run() -> None:
            try:
                await self.reinitialize(seen_generation)
            except (RelayFailure, aiohttp.ClientError, TimeoutError) as exc:
                self.counters.last_error = str(exc) or type(exc).__name__
                log.warning("upstream_reinitialize_failed", server=self.name, reason=self.counters.last_error)

        self.spawn(run())
