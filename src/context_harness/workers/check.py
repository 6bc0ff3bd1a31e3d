"""`chctl check`: a live probe of each server on exactly the path an agent's traffic takes — the bridge's
upstream session (`upstream.session.Upstream`) with the current credential, through the daemon's proxy and
trust store: `initialize`, `tools/list`, then the session ends. Each server gets one `Probe`: what happened in
words, what the server said about itself, and on failure the next thing to do.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog

from context_harness import __version__
from context_harness.daemon.rpc_params import CheckParams
from context_harness.daemon.services import Services
from context_harness.oauth.challenge import parse_www_authenticate
from context_harness.primitives.outside_values import is_secure_endpoint
from context_harness.primitives.result import Failure, Result, Success
from context_harness.upstream.session import Upstream
from context_harness.workers.bridge import ServerCredentials

log = structlog.get_logger(__name__)

# The revision we offer; a server answers with the one it speaks (shown as the protocol version).
OFFERED_PROTOCOL_VERSION = "2025-06-18"
MAX_TOOL_PAGES = 20  # a server that pages forever is a broken one: count what 20 pages hold

Level = Literal["ok", "attention", "failed"]
NEXT_ACTION = {
    "dns": "check the server's URL (`chctl list`) and this machine's DNS",
    "connect": "is the server up? check its URL and port (`chctl list`)",
    "timeout": "the server or the proxy is slow or drops the connection: try again, see `chctl logs`",
    "protocol": "the server does not answer as an MCP server should: check its URL, see `chctl logs`",
}


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    outcome: str  # ok, dns, connect, proxy, certificate, timeout, unauthorized, forbidden, protocol, config
    level: Level  # attention: a person fixes it with chctl (a login, a scope); failed: the network or the server
    message: str
    next_action: str | None = None
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    tools: int | None = None
    elapsed_ms: int = 0
    proxy: str | None = None  # host:port of the proxy used, or None (direct)
    note: str | None = None  # what else a person should know (a nearby entry that was not run)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def run_check(s: Services, p: CheckParams) -> Result[dict[str, Any]]:
    from context_harness.workers.check_stdio import nearby_local_entries, probe_local  # they build on this module

    names = p.names or sorted(s.bindings.load())
    nearby = await nearby_local_entries(s, Path(p.cwd)) if p.cwd else {}

    async def probe(name: str) -> Probe:
        bindings = s.bindings.for_server(name)
        # A bridged entry is local too (it runs `chctl bridge`): its binding's URL is what to probe.
        if any(b.url for b in bindings):
            return await probe_server(s, name, p.timeout_s)
        if name not in nearby and (unknown := s.unknown(name)) is not None:
            return Probe(name, "config", "failed", unknown.error, unknown.hint)
        return await probe_local(s, name, bindings, nearby.get(name), p.timeout_s)

    probes = await asyncio.gather(*(probe(name) for name in names))
    return Success({"servers": [probe.as_dict() for probe in probes]})


async def probe_server(s: Services, name: str, timeout_s: float) -> Probe:
    url = await s.oauth.server_url_off_loop(name)
    if isinstance(url, Failure):
        return Probe(name, "config", "failed", url.error, url.hint)
    proxy = s.http.network.proxies.for_url(url.value)
    where = proxy.where if proxy is not None else None
    if not is_secure_endpoint(url.value) and s.tokens.load(name) is not None:
        hint = f"use the server's https:// URL: `chctl add {name} --bridge --url https://...`"
        return Probe(name, "config", "failed", f"refusing to send {name}'s credential in clear text", hint)
    credentials = ServerCredentials(name, s.tokens, s.oauth)
    started = time.monotonic()
    conversation = _Conversation()
    upstream = Upstream(name, url.value, s.bridge_http(), credentials, conversation.deliver)
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


Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Notify = Callable[[str], Awaitable[None]]


async def converse(name: str, ask: Ask, notify: Notify, failed: Callable[[Any], Probe]) -> Probe:
    """`initialize`, `notifications/initialized`, `tools/list` (every page): what a client does first, over
    whichever transport `ask` and `notify` speak; `failed` says what a JSON-RPC error means there."""
    hello = {
        "protocolVersion": OFFERED_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "chctl check", "version": __version__},
    }
    answer = await ask("initialize", hello)
    if "error" in answer:
        return failed(answer["error"])
    result = _object(answer.get("result"))
    info = _object(result.get("serverInfo"))
    server_name, server_version = _text(info.get("name")), _text(info.get("version"))
    await notify("notifications/initialized")
    tools, cursor = 0, None
    for _ in range(MAX_TOOL_PAGES):
        listed = await ask("tools/list", {"cursor": cursor} if cursor else {})
        if "error" in listed:
            return failed(listed["error"])
        page = _object(listed.get("result"))
        tools += len(page["tools"]) if isinstance(page.get("tools"), list) else 0
        cursor = page.get("nextCursor") if isinstance(page.get("nextCursor"), str) else None
        if not cursor:
            break
    return Probe(
        name,
        "ok",
        "ok",
        f"{name} answers",
        server_name=server_name,
        server_version=server_version,
        protocol_version=_text(result.get("protocolVersion")),
        tools=tools,
    )


def _failed(name: str, upstream: Upstream, error: Any) -> Probe:
    """What a JSON-RPC error (the relay's own, or the server's) means, from what the session saw."""
    error = _object(error)
    data = _object(error.get("data"))
    message = _text(data.get("message")) or _text(error.get("message")) or "no message"
    hint = _text(data.get("hint"))
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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
