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

The transports are functions of the session's state (`session_base.SessionState`); this module decides what
follows what they return: a lost session is initialized again here, the fallback to the legacy transport made
here. Concurrency: anyio (the client's messages in one task group, each a cancel scope; the tasks that outlive
their caller, the server's own stream, are `session_base.Background`'s).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import anyio
import anyio.abc
import structlog

from context_harness.net.failures import ReachKind, reach_kind, unreachable
from context_harness.primitives.relay_errors import relay_error
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream import legacy_sse, limits, messages, streamable
from context_harness.upstream.auth import AuthFlow, AuthPolicy
from context_harness.upstream.carried import CarriedRequests
from context_harness.upstream.contract import Counters, Credentials, Deliver, RelayFailure
from context_harness.upstream.messages import Message
from context_harness.upstream.session_base import Posted, SessionLost, SessionState
from context_harness.upstream.sse import SseParser

log = structlog.get_logger(__name__)

# How long a request of our own waits for its answer.
OWN_REQUEST_TIMEOUT_S = 60
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


class _Answer:
    """The answer to a request of our own, once it has come."""

    def __init__(self) -> None:
        self.came = anyio.Event()
        self.message: Message | None = None


class Upstream:
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
        self.name = name
        self.deliver = deliver
        auth = AuthPolicy(name, credentials, counters or Counters())
        self.state = SessionState(name, url, http, auth, self._incoming, static_headers=dict(headers or {}))
        self.counters = auth.counters
        self.last_reach_failure: ReachKind | None = None  # for `chctl check`: where a request last failed
        self._init_request: Message | None = None
        self._initialized_note: Message | None = None
        self._reinit_lock = anyio.Lock()
        self._internal_ids = itertools.count(1)
        self._answers: dict[str | int, _Answer] = {}  # our own requests waiting for their answers
        self._carrying = CarriedRequests()  # the client's requests, by id
        self._reinit_budget = limits.ReinitBudget()
        self._ready = anyio.Event()  # a new one, unset, while the session is being initialized again
        self._ready.set()
        self._group: anyio.abc.TaskGroup | None = None  # owns the client's messages (`carrying`)

    @property
    def transport(self) -> Literal["streamable-http", "sse"] | None:
        return self.state.transport

    @property
    def last_answer(self) -> tuple[int, str | None] | None:
        """For `chctl check`: the server's last HTTP status and WWW-Authenticate to a message of the session."""
        return self.state.last_answer

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
                self.state.closing = True
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
            await self.reinitialize(self.state.generation)
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
        self.state.closing = True
        await self.state.background.stop()
        if self.state.transport == "streamable-http":
            await streamable.end(self.state)

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
        except Exception:
            log.exception("relay_message_crashed", server=self.name)
            await self._fail(message, Failure("internal error in context-harnessd's relay", ErrorCode.INTERNAL))

    async def _fail(self, message: Message, failure: Failure) -> None:
        self.counters.last_error = failure.error
        log.warning("relay_request_failed", server=self.name, method=message.method, reason=failure.error)
        if message.is_request and not self.state.closing:
            reply = relay_error(message.id, failure.error, failure.code.value, failure.hint)
            with contextlib.suppress(ConnectionError, OSError):  # the client is gone: nobody to tell
                await self.deliver(await Message.of(reply))

    async def _send(self, message: Message, *, internal: bool = False) -> None:
        """Send one message over the transport the server speaks, initializing the session again (once for this
        message) when the server lost it, and falling back to the legacy transport when it asks for that."""
        state = self.state
        if not internal:
            if not self._ready.is_set():
                await self._ready.wait()
            if state.transport is None and self._init_request is not None and self._init_request is not message:
                # A session restored after a daemon restart that could not be initialized then: now.
                await self.reinitialize(state.generation)
        flow, reinitialized = state.auth.flow(), False
        while True:
            outcome = await self._post(message, flow, may_reinitialize=not reinitialized)
            if outcome is Posted.LEGACY:
                await self._switch_to_legacy()
                flow = state.auth.flow()  # a transport of its own, a renewal of its own
            elif isinstance(outcome, SessionLost):
                reinitialized = True
                await self.reinitialize(outcome.generation)
            elif outcome is None:  # the legacy stream had named no endpoint yet
                await self.reinitialize(state.generation)
            else:
                break
        if message.method == "notifications/initialized" and state.transport == "streamable-http":
            self._start_listening()

    async def _post(self, message: Message, flow: AuthFlow, *, may_reinitialize: bool) -> Posted | SessionLost | None:
        """One try of `_send` over the session's transport; None: the legacy transport has no endpoint to POST to."""
        if self.state.transport != "sse":
            return await streamable.post(self.state, message, flow, may_reinitialize=may_reinitialize)
        if self.state.endpoint is None:
            return None
        return await legacy_sse.post(self.state, message, flow, may_reinitialize=may_reinitialize)

    async def _internal(self, message: Message) -> Message | None:
        """Send a message of our own; for a request, wait for its response (kept from the client)."""
        key = messages.lookup_id(message.id) if message.is_request else None
        if key is None:
            await self._send(message, internal=True)
            return None
        answer = self._answers[key] = _Answer()
        try:
            await self._send(message, internal=True)
            with anyio.fail_after(OWN_REQUEST_TIMEOUT_S):
                await answer.came.wait()
            return answer.message
        finally:
            self._answers.pop(key, None)

    async def _incoming(self, message: Message) -> None:
        """A message from the server: to its waiter if it answers one of ours, else to the client."""
        if message.is_batch:  # a JSON-RPC batch
            items, skipped = await messages.batch_members(message)
            if skipped:
                log.warning("upstream_sent_non_message", server=self.name, count=skipped)
            for item in items:
                await self._incoming(item)
            return
        key = messages.lookup_id(message.id) if message.is_response else None
        answer = self._answers.get(key) if key is not None else None
        if answer is None:
            await self.deliver(message)
        elif not answer.came.is_set():
            answer.message = message
            answer.came.set()

    # --- the transports' streams of their own ------------------------------------------------------------

    async def _switch_to_legacy(self) -> None:
        if self.state.transport != "sse":
            self.state.transport = "sse"
            log.info("upstream_transport_legacy_sse", server=self.name)
            await self._connect_legacy()

    async def _connect_legacy(self) -> None:
        """Open the legacy transport's stream and keep reading it in the background."""
        self.state.background.stop_listening()
        response, parser = await legacy_sse.connect(self.state)
        generation = self.state.generation
        self.state.background.listen_with(self._read_legacy(response, parser, generation), generation)

    async def _read_legacy(self, response: aiohttp.ClientResponse, parser: SseParser, generation: int) -> None:
        lost = await legacy_sse.read(self.state, response, parser, generation)
        if lost is not None:
            self.state.background.spawn(self._reinitialize_quietly(lost.generation))

    def _start_listening(self) -> None:
        generation = self.state.generation
        if not self.state.background.listening(generation):
            self.state.background.listen_with(self._listen(generation), generation)

    async def _listen(self, generation: int) -> None:
        lost = await streamable.listen(self.state, generation)
        if lost is not None:  # from a task of its own: the new session's listener replaces this one
            self.state.background.spawn(self._reinitialize_quietly(lost.generation))

    # --- a lost session ---------------------------------------------------------------------------------

    async def reinitialize(self, seen_generation: int) -> None:
        """Initialize the session again with the client's own handshake; once for all who saw it break."""
        state = self.state
        async with self._reinit_lock:
            if seen_generation != state.generation:
                return  # someone else already did
            if self._init_request is None:
                raise RelayFailure(
                    Failure(f"{self.name} lost the session before it was initialized", ErrorCode.NETWORK, "reconnect")
                )
            delay = self._reinit_budget.delay()
            if delay is None:
                raise RelayFailure(limits.lost_too_often(self.name))
            state.generation += 1
            state.session_id = None
            self._ready = anyio.Event()
            try:
                await anyio.sleep(delay)
                self._reinit_budget.spend()
                await self._handshake(self._init_request)
            finally:
                self._ready.set()
            self.counters.reinitializations += 1
            log.info("upstream_session_reinitialized", server=self.name, transport=state.transport)

    async def _handshake(self, init_request: Message) -> None:
        """The client's `initialize` (under an id of our own) and `notifications/initialized`, sent again."""
        if self.state.transport == "sse":
            await self._connect_legacy()
        request = await init_request.with_id(f"context-harness-{next(self._internal_ids)}")
        reply = await self._internal(request)
        if reply is None or reply.has("error"):
            raise RelayFailure(Failure(f"{self.name} refused to initialize a new session", ErrorCode.NETWORK))
        self.state.protocol_version = messages.protocol_version_of(reply) or self.state.protocol_version
        note = self._initialized_note or await Message.of(INITIALIZED)
        await self._internal(note)

    async def _reinitialize_quietly(self, seen_generation: int) -> None:
        """Re-initialize for the server's own stream, which nobody waits for: a failure is only logged."""
        try:
            await self.reinitialize(seen_generation)
        except (RelayFailure, aiohttp.ClientError, TimeoutError) as exc:
            self.counters.last_error = str(exc) or type(exc).__name__
            log.warning("upstream_reinitialize_failed", server=self.name, reason=self.counters.last_error)
