"""`chctl check`: a live probe of each server on exactly the path an agent's traffic takes — the bridge's
upstream session (`upstream.session.Upstream`) with the current credential, through the daemon's proxy and
trust store: `initialize`, `tools/list`, then the session ends. Each server gets one `Probe` (`probe.py`): what
happened in words, what the server said about itself, and on failure the next thing to do. A local entry is
started from its own command (`check_stdio.py`). `chctl doctor` asks a server without a credential here too.
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
from context_harness.primitives.result import Failure
from context_harness.services.config_service import ConfigService
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore
from context_harness.upstream.session import Upstream
from context_harness.workers.bridge import ServerCredentials
from context_harness.workers.check_stdio import nearby_local_entries, probe_local
from context_harness.workers.probe import NEXT_ACTION, Probe, converse, object_or_empty, text_or_none

log = structlog.get_logger(__name__)


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

    async def probe_server(self, name: str, timeout_s: float) -> Probe:
        """A remote server, through the bridge's upstream session with the stored credential (if any)."""
        url = await self.oauth.server_url_off_loop(name)
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
        upstream = Upstream(name, url.value, self.http(), credentials, conversation.deliver)
        try:
            async with asyncio.timeout(timeout_s), upstream.carrying():
                probe = await _talk(name, upstream, conversation)
        except TimeoutError:
            probe = Probe(
                name, "timeout", "failed", f"{name} did not answer within {timeout_s:g} s", NEXT_ACTION["timeout"]
            )
        finally:
            await upstream.close()
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.info("server_checked", server=name, outcome=probe.outcome, elapsed_ms=elapsed_ms)
        return replace(probe, elapsed_ms=elapsed_ms, proxy=where)


class _Conversation:
    """Our own requests and their answers: the upstream session delivers every message here."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def deliver(self, message: dict[str, Any]) -> None:
        waiter = self._waiters.get(str(message.get("id")))
        if waiter is not None and not waiter.done() and "method" not in message:
            waiter.set_result(message)

    async def ask(self, upstream: Upstream, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = f"chctl-check-{next(self._ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        upstream.submit({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            return await waiter
        finally:
            del self._waiters[request_id]


async def _talk(name: str, upstream: Upstream, conversation: _Conversation) -> Probe:
    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await conversation.ask(upstream, method, params)

    async def notify(method: str) -> None:
        upstream.submit({"jsonrpc": "2.0", "method": method})

    return await converse(name, ask, notify, lambda error: _failed(name, upstream, error))


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
    if status == 401 or data.get("code") in ("AUTH_REQUIRED", "TOKEN_EXPIRED"):
        said = f" (WWW-Authenticate error={challenge.error})" if challenge and challenge.error else ""
        return Probe(name, "unauthorized", "attention", f"401{said}: {message}", hint or f"`chctl auth {name}`")
    if status == 403:
        error, scope = (challenge.error, challenge.scope) if challenge else (None, None)
        said = f" ({error}{f', needs {scope}' if scope else ''})" if error else ""
        action = (
            f"`chctl auth {name} --scope {scope}`"
            if scope
            else f"log in with the scopes the server needs: `chctl auth {name} --scope ...`, or ask for access"
        )
        return Probe(name, "forbidden", "attention", f"403{said}: {message}", action)
    return Probe(name, "protocol", "failed", message, hint or NEXT_ACTION["protocol"])
