"""What `chctl check` reports of one server (`Probe`), and the conversation every probe holds with it, whatever
the transport: `initialize`, `notifications/initialized`, `tools/list`. `check.py` speaks it over the bridge's
upstream session, `check_stdio.py` over a local command's stdin and stdout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from context_harness import __version__

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
    result = object_or_empty(answer.get("result"))
    info = object_or_empty(result.get("serverInfo"))
    server_name, server_version = text_or_none(info.get("name")), text_or_none(info.get("version"))
    await notify("notifications/initialized")
    tools, cursor = 0, None
    for _ in range(MAX_TOOL_PAGES):
        listed = await ask("tools/list", {"cursor": cursor} if cursor else {})
        if "error" in listed:
            return failed(listed["error"])
        page = object_or_empty(listed.get("result"))
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
        protocol_version=text_or_none(result.get("protocolVersion")),
        tools=tools,
    )


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def object_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
