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
from context_harness.daemon.bridge import ServerCredentials, refusal_message
from context_harness.daemon.rpc_params import CheckParams
from context_harness.daemon.services import Services
from context_harness.oauth.challenge import parse_www_authenticate
from context_harness.primitives.json_scan import NotJson, decode, steps
from context_harness.primitives.outside_values import is_secure_endpoint
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services.server_state import ServerState
from context_harness.services.static_headers import static_headers
from context_harness.upstream.messages import MAX_ROUTED_BYTES, PROTOCOL_VERSION_META_KEY, Message, scan_async
from context_harness.upstream.session import Upstream

log = structlog.get_logger(__name__)

# The revision we offer; a server answers with the one it speaks (shown as the protocol version).
OFFERED_PROTOCOL_VERSION = "2025-06-18"
# Asked first, with `server/discover`, as the MCP SDKs' clients do in their default mode: no `initialize` then.
MODERN_PROTOCOL_VERSION = "2026-07-28"
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
MAX_TOOL_PAGES = 20  # a server that pages forever is a broken one: count what 20 pages hold
CHALLENGE_SHOWN_CHARS = 200  # of a refusal's WWW-Authenticate, kept for `status`: a scope list, not a novel

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
    from context_harness.daemon.check_stdio import nearby_local_entries, probe_local  # they build on this module

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
    headers = static_headers(name, url.value, s.bindings.for_server(name), s.tokens.load(name))
    upstream = Upstream(name, url.value, s.bridge_http(), credentials, conversation.deliver, headers=headers)
    try:
        async with asyncio.timeout(timeout_s), upstream.carrying():
            probe = await _talk(name, upstream, conversation)
            await _keep_refusal(s, name, upstream, credentials)
    except TimeoutError:
        probe = Probe(
            name, "timeout", "failed", f"{name} did not answer within {timeout_s:g} s", NEXT_ACTION["timeout"]
        )
    finally:
        await upstream.close()
    elapsed_ms = round((time.monotonic() - started) * 1000)
    probe = _with_scopes_wanted(probe, s.states.peek(name))
    log.info("server_checked", server=name, outcome=probe.outcome, elapsed_ms=elapsed_ms)
    return replace(probe, elapsed_ms=elapsed_ms, proxy=where)


async def _keep_refusal(s: Services, name: str, upstream: Upstream, credentials: ServerCredentials) -> None:
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
        message = refusal_message(status, s.tokens.load(name))
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


@dataclass(frozen=True, slots=True)
class Answer:
    """What a check reads of an answer: its error, or its result's server, versions, tools and next page."""

    error: dict[str, Any] | None = None  # present (an object, or {} for anything else) when the answer is one
    server_info: dict[str, Any] | None = None  # `initialize`'s serverInfo
    stamped_info: dict[str, Any] | None = None  # a 2026-07-28 result's serverInfo, in its `_meta`
    protocol_version: str | None = None
    supported_versions: tuple[str, ...] = ()  # `server/discover`'s
    tools: int = 0
    next_cursor: str | None = None

    @classmethod
    def of(cls, message: dict[str, Any]) -> Answer:
        """From a decoded message (a local server's, read line by line)."""
        if "error" in message:
            return cls(error=_object(message["error"]))

        def value(*path: str) -> Any:
            found: Any = message
            for key in path:
                found = _object(found).get(key)
            return found

        tools = value("result", "tools")
        return cls._result(value, len(tools) if isinstance(tools, list) else 0)

    @classmethod
    async def read(cls, message: Message) -> Answer:
        """From a relayed message, read where it lies: the tools are counted, not kept (a page may be 64 MiB)."""
        try:
            found = await scan_async(steps(message.raw, _READ, counted=[("result", "tools")], span=message.span))
        except NotJson:  # the relay read it already: not reached
            return cls(error={"message": "the answer is not JSON"})

        def value(*path: str) -> Any:
            span = found.spans.get(path)
            return decode(message.raw, span, MAX_ROUTED_BYTES) if span is not None else None

        if ("error",) in found.spans:
            return cls(error=_object(value("error")) or {"message": "an error too long to show"})
        return cls._result(value, found.counts.get(("result", "tools"), 0))

    @classmethod
    def _result(cls, value: Callable[..., Any], tools: int) -> Answer:
        versions = value("result", "supportedVersions")
        return cls(
            server_info=_object(value("result", "serverInfo")),
            stamped_info=_object(value("result", "_meta", SERVER_INFO_META_KEY)),
            protocol_version=_text(value("result", "protocolVersion")),
            supported_versions=tuple(v for v in versions if isinstance(v, str)) if isinstance(versions, list) else (),
            tools=tools,
            next_cursor=_text(value("result", "nextCursor")),
        )


# What `Answer.read` decodes: each small (at most MAX_ROUTED_BYTES), the tools only counted.
_READ = (
    ("error",),
    ("result", "serverInfo"),
    ("result", "_meta", SERVER_INFO_META_KEY),
    ("result", "protocolVersion"),
    ("result", "supportedVersions"),
    ("result", "nextCursor"),
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


Ask = Callable[[str, dict[str, Any]], Awaitable[Answer]]
Notify = Callable[[str], Awaitable[None]]


def _modern(params: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 request's params: the version (and who asks) in `_meta`, no handshake before it."""
    meta = {
        PROTOCOL_VERSION_META_KEY: MODERN_PROTOCOL_VERSION,
        CLIENT_INFO_META_KEY: {"name": "chctl check", "version": __version__},
        CLIENT_CAPABILITIES_META_KEY: {},
    }
    return {**params, "_meta": meta}


async def discover_modern(
    name: str, ask: Ask, failed: Callable[[Any], Probe], refused: Callable[[Any], bool]
) -> Probe | None:
    """What an agent's SDK in its default mode does first: `server/discover` at 2026-07-28, then `tools/list` in
    that protocol. None when the server does not speak it (then `initialize`, as the SDK falls back)."""
    answer = await ask("server/discover", _modern({}))
    if answer.error is not None:
        return failed(answer.error) if refused(answer.error) else None
    if MODERN_PROTOCOL_VERSION not in answer.supported_versions:
        return None
    info = answer.stamped_info or {}
    listed = await _count_tools(lambda cursor: ask("tools/list", _modern({"cursor": cursor} if cursor else {})))
    return failed(listed) if isinstance(listed, dict) else _answers(name, info, MODERN_PROTOCOL_VERSION, listed)


def _answers(name: str, info: dict[str, Any], protocol: str | None, tools: int) -> Probe:
    """A server that answered: who it says it is, the protocol it spoke, how many tools."""
    return Probe(
        name,
        "ok",
        "ok",
        f"{name} answers",
        server_name=_text(info.get("name")),
        server_version=_text(info.get("version")),
        protocol_version=protocol,
        tools=tools,
    )


async def _count_tools(page: Callable[[str | None], Awaitable[Answer]]) -> int | dict[str, Any]:
    """The tools of every page (at most MAX_TOOL_PAGES), or the error of the page that failed."""
    tools, cursor = 0, None
    for _ in range(MAX_TOOL_PAGES):
        listed = await page(cursor)
        if listed.error is not None:
            return listed.error
        tools += listed.tools
        cursor = listed.next_cursor
        if not cursor:
            break
    return tools


async def converse(name: str, ask: Ask, notify: Notify, failed: Callable[[Any], Probe]) -> Probe:
    """`initialize`, `notifications/initialized`, `tools/list` (every page): what a client does first, over
    whichever transport `ask` and `notify` speak; `failed` says what a JSON-RPC error means there."""
    hello = {
        "protocolVersion": OFFERED_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "chctl check", "version": __version__},
    }
    answer = await ask("initialize", hello)
    if answer.error is not None:
        return failed(answer.error)
    await notify("notifications/initialized")
    listed = await _count_tools(lambda cursor: ask("tools/list", {"cursor": cursor} if cursor else {}))
    if isinstance(listed, dict):
        return failed(listed)
    return _answers(name, answer.server_info or {}, answer.protocol_version, listed)


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
    if status == 403:
        error, scope = (challenge.error, challenge.scope) if challenge else (None, None)
        said = f" ({error}{f', needs {scope}' if scope else ''})" if error else ""
        action = hint or f"log in with the scopes the server needs: `chctl auth {name} --scope ...`, or ask for access"
        return Probe(name, "forbidden", "attention", f"403{said}: {message}", action)
    if status == 401 or data.get("code") in ("AUTH_REQUIRED", "TOKEN_EXPIRED"):
        said = f" (WWW-Authenticate error={challenge.error})" if challenge and challenge.error else ""
        return Probe(name, "unauthorized", "attention", f"401{said}: {message}", hint or f"`chctl auth {name}`")
    return Probe(name, "protocol", "failed", message, hint or NEXT_ACTION["protocol"])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
