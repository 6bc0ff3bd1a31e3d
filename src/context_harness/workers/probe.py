"""What `chctl check` reports of one server (`Probe`), what it reads of an answer (`Answer`), and the
conversation every probe holds with it, whatever the transport: `server/discover` at 2026-07-28 as the SDKs do
first, else `initialize`, `notifications/initialized`, `tools/list`. `check.py` speaks it over the bridge's
upstream session, `check_stdio.py` over a local command's stdin and stdout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from context_harness import __version__
from context_harness.primitives.json_scan import NotJson, decode, steps
from context_harness.upstream.messages import MAX_ROUTED_BYTES, PROTOCOL_VERSION_META_KEY, Message, scan_async

# The revision we offer; a server answers with the one it speaks (shown as the protocol version).
OFFERED_PROTOCOL_VERSION = "2025-06-18"
# Asked first, with `server/discover`, as the MCP SDKs' clients do in their default mode: no `initialize` then.
MODERN_PROTOCOL_VERSION = "2026-07-28"
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
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
            return cls(error=object_or_empty(message["error"]))

        def value(*path: str) -> Any:
            found: Any = message
            for key in path:
                found = object_or_empty(found).get(key)
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
            return cls(error=object_or_empty(value("error")) or {"message": "an error too long to show"})
        return cls._result(value, found.counts.get(("result", "tools"), 0))

    @classmethod
    def _result(cls, value: Callable[..., Any], tools: int) -> Answer:
        versions = value("result", "supportedVersions")
        return cls(
            server_info=object_or_empty(value("result", "serverInfo")),
            stamped_info=object_or_empty(value("result", "_meta", SERVER_INFO_META_KEY)),
            protocol_version=text_or_none(value("result", "protocolVersion")),
            supported_versions=tuple(v for v in versions if isinstance(v, str)) if isinstance(versions, list) else (),
            tools=tools,
            next_cursor=text_or_none(value("result", "nextCursor")),
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
        server_name=text_or_none(info.get("name")),
        server_version=text_or_none(info.get("version")),
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


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def object_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
