"""`chctl check`: a live probe of each server on exactly the path an agent's traffic takes — the bridge's
upstream session (`upstream.session.Upstream`) with the current credential, through the daemon's proxy and
trust store: `server/discover` or `initialize`, `tools/list`, then the session ends. Each server gets one
`Probe` (`probe.py`): what happened in words, what the server said about itself, and on failure the next thing
to do. A local entry is started from its own command (`check_stdio.py`). `chctl doctor` asks a server without a
credential here too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from context_harness.net.http_client import HttpClient
from context_harness.oauth.challenge import parse_www_authenticate
from context_harness.primitives.outside_values import is_secure_endpoint
from context_harness.primitives.result import Failure, Success
from context_harness.services.config_service import ConfigService
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService
from context_harness.services.server_state import ServerState
from context_harness.services.static_headers import static_headers
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore
from context_harness.upstream.messages import Message
from context_harness.upstream.session import Upstream
from context_harness.workers.bridge import ServerCredentials, refusal_message
from context_harness.workers.check_stdio import nearby_local_entries, probe_local
from context_harness.workers.probe import (
    NEXT_ACTION,
    Answer,
    Probe,
    converse,
    discover_modern,
    object_or_empty,
    text_or_none,
)

log = structlog.get_logger(__name__)

CHALLENGE_SHOWN_CHARS = 200  # of a refusal's WWW-Authenticate, kept for `status`: a scope list, not a novel


class Checker:
    """Probes servers for `chctl check` and `chctl doctor`."""

    def __init__(
        self,
        tokens: TokenStore,
        bindings: BindingStore,
        config: ConfigService,
        mcp: MCPService,
        oauth: OAuthService,
        http: HttpClient,  # the bridged servers' pool: a probe goes the bridge's way
        unknown: Callable[[str], Failure | None],  # why a name is no server of ours (`Carrier.unknown`)
        config_io_timeout_s: float,
    ) -> None:
        self.tokens = tokens
        self.bindings = bindings
        self.config = config
        self.mcp = mcp
        self.oauth = oauth
        self.http = http
        self.unknown = unknown
        self.config_io_timeout_s = config_io_timeout_s

    def configure(self, config_io_timeout_s: float) -> None:
        self.config_io_timeout_s = config_io_timeout_s

    async def run(self, names: list[str], cwd: Path | None, timeout_s: float) -> list[Probe]:
        """One probe per server, all at once. `cwd`: where `chctl check` runs (its nearest config's local
        entries are reported, never run)."""
        nearby = await nearby_local_entries(self.mcp, cwd, self.config_io_timeout_s) if cwd else {}

        async def probe(name: str) -> Probe:
            bindings = self.bindings.for_server(name)
            # A bridged entry is local too (it runs `chctl bridge`): its binding's URL is what to probe.
            if any(b.url for b in bindings):
                return await self.probe_server(name, timeout_s)
            if name not in nearby and (unknown := self.unknown(name)) is not None:
                return Probe(name, "config", "failed", unknown.error, unknown.hint)
            local = await probe_local(
                self.config, name, bindings, nearby.get(name), timeout_s, self.config_io_timeout_s
            )
            return local if local is not None else await self.probe_server(name, timeout_s)  # not local at all

        return list(await asyncio.gather(*(probe(name) for name in names)))

    async def probe_server(self, name: str, timeout_s: float, at: tuple[str, dict[str, str]] | None = None) -> Probe:
        """A remote server, through the bridge's upstream session with the stored credential (if any) and the
        static headers recorded for it; `at`: another URL and headers to ask it at (`chctl doctor`'s, from a
        config entry)."""
        url = Success(at[0]) if at is not None else await self.oauth.server_url_off_loop(name)
        if isinstance(url, Failure):
            return Probe(name, "config", "failed", url.error, url.hint)
        proxy = self.http.network.proxies.for_url(url.value)
        where = proxy.where if proxy is not None else None
        if not is_secure_endpoint(url.value) and self.tokens.load(name) is not None:
            hint = f"use the server's https:// URL: `chctl add {name} --bridge --url https://...`"
            return Probe(name, "config", "failed", f"refusing to send {name}'s credential in clear text", hint)
        credentials = ServerCredentials(name, self.tokens, self.oauth)
        started = time.monotonic()
        conversation = _Conversation()
        headers = at[1] if at is not None else self._static_headers(name, url.value)
        upstream = Upstream(name, url.value, self.http(), credentials, conversation.deliver, headers=headers)
        try:
            async with asyncio.timeout(timeout_s), upstream.carrying():
                probe = await _talk(name, upstream, conversation)
                await self._keep_refusal(name, upstream, credentials)
        except TimeoutError:
            probe = Probe(
                name, "timeout", "failed", f"{name} did not answer within {timeout_s:g} s", NEXT_ACTION["timeout"]
            )
        finally:
            await upstream.close()
        elapsed_ms = round((time.monotonic() - started) * 1000)
        probe = _with_scopes_wanted(probe, self.oauth.states.peek(name))
        log.info("server_checked", server=name, outcome=probe.outcome, elapsed_ms=elapsed_ms)
        return replace(probe, elapsed_ms=elapsed_ms, proxy=where)

    def _static_headers(self, name: str, url: str) -> dict[str, str]:
        return static_headers(name, url, self.bindings.for_server(name), self.tokens.load(name))

    async def _keep_refusal(self, name: str, upstream: Upstream, credentials: ServerCredentials) -> None:
        """A refusal the probe met is kept (the session's auth flow did that) with what the server's challenge
        said: `chctl status` and `doctor` show it until a request succeeds."""
        status, challenge_text = upstream.last_answer or (None, None)
        challenge = parse_www_authenticate(challenge_text)
        if status not in (401, 403) or credentials.header() is None or challenge is None:
            return
        if challenge.error == "insufficient_scope":
            return  # step-up: the scopes it wants are in the state already (`step_up.scope_refused`)
        said = ", ".join(f"{k}={v}" for k, v in (("error", challenge.error), ("scope", challenge.scope)) if v)
        said = said[:CHALLENGE_SHOWN_CHARS]
        if said:
            message = refusal_message(status, self.tokens.load(name))
            await credentials.refused(status, f"{message} (WWW-Authenticate: {said})")


def _with_scopes_wanted(probe: Probe, state: ServerState | None) -> Probe:
    """A server that answers, but refused an agent's call for lack of scope: that needs a person too."""
    if probe.level != "ok" or state is None or not state.scopes_wanted:
        return probe
    wanted = " ".join(state.scopes_wanted)
    message = f"{probe.name} answers, but refused a call for lack of scope {wanted} (insufficient_scope)"
    return replace(
        probe, outcome="forbidden", level="attention", message=message, next_action=f"`chctl auth {probe.name}`"
    )


class _Conversation:
    """Our own requests and their answers: the upstream session delivers every message here."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Message]] = {}

    async def deliver(self, message: Message) -> None:
        waiter = self._waiters.get(str(message.id))
        if waiter is not None and not waiter.done() and not message.has("method"):
            waiter.set_result(message)

    async def ask(self, upstream: Upstream, method: str, params: dict[str, Any]) -> Answer:
        request_id = f"chctl-check-{next(self._ids)}"
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        upstream.submit(await Message.of({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        try:
            return await Answer.read(await waiter)
        finally:
            del self._waiters[request_id]


async def _talk(name: str, upstream: Upstream, conversation: _Conversation) -> Probe:
    async def ask(method: str, params: dict[str, Any]) -> Answer:
        return await conversation.ask(upstream, method, params)

    async def notify(method: str) -> None:
        upstream.submit(await Message.of({"jsonrpc": "2.0", "method": method}))

    def refused(_error: Any) -> bool:
        """The discovery failed for a reason `initialize` would meet too: unreachable, or no credential."""
        status = upstream.last_answer[0] if upstream.last_answer else None
        return upstream.last_reach_failure is not None or status in (401, 403)

    failed = lambda error: _failed(name, upstream, error)  # noqa: E731
    probe = await discover_modern(name, ask, failed, refused)
    return probe or await converse(name, ask, notify, failed)


def _failed(name: str, upstream: Upstream, error: Any) -> Probe:
    """What a JSON-RPC error (the relay's own, or the server's) means, from what the session saw."""
    error = object_or_empty(error)
    data = object_or_empty(error.get("data"))
    message = text_or_none(data.get("message")) or text_or_none(error.get("message")) or "no message"
    hint = text_or_none(data.get("hint"))
    if hint and message.endswith(f" ({hint})"):
        message = message.removesuffix(f" ({hint})")
    if upstream.last_reach_failure is not None:
        kind = upstream.last_reach_failure
        return Probe(name, kind, "failed", message, hint or NEXT_ACTION.get(kind))
    status, challenge_text = upstream.last_answer or (None, None)
    challenge = parse_www_authenticate(challenge_text)
    if status == 403:
        error, scope = (challenge.error, challenge.scope) if challenge else (None, None)
        said = f" ({error}{f', needs {scope}' if scope else ''})" if error else ""
        action = hint or f"log in with the scopes the server needs: `chctl auth {name} --scope ...`, or ask for access"
        return Probe(name, "forbidden", "attention", f"403{said}: {message}", action)
    if status == 401 or data.get("code") in ("AUTH_REQUIRED", "TOKEN_EXPIRED"):
        said = f" (WWW-Authenticate error={challenge.error})" if challenge and challenge.error else ""
        return Probe(name, "unauthorized", "attention", f"401{said}: {message}", hint or f"`chctl auth {name}`")
    return Probe(name, "protocol", "failed", message, hint or NEXT_ACTION["protocol"])
