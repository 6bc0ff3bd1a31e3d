"""JSON-RPC messages as the relay sees them: what kind a message is, the HTTP headers that route it, and what a
server said in an error body. No I/O. The relay's own error replies are `primitives.relay_errors`.

A message stays the bytes it came as (`Message`): the relay reads its id, method and the few members that
route it (`json_scan`, or `json.loads` for a message of 64 KiB or less), checks the rest is JSON, and passes
the bytes on. It never decodes a longer message whole, nor serialises one again: a 60 MiB reply costs its
60 MiB, once.

Concurrency: asyncio (a long scan lets the loop run with `asyncio.sleep(0)`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from context_harness.oauth.preflight import page_text
from context_harness.primitives.json_scan import Data, NotJson, Path, Scanned, Span, decode, prepare, steps
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable

# Protocol revisions negotiated by `initialize`; a later revision carries its version in every request's
# `_meta` and wants it, the method and the name mirrored in headers.
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

# The members the relay reads; everything else in a message is passed on as it came.
ROUTED: tuple[Path, ...] = (
    ("jsonrpc",),
    ("id",),
    ("method",),
    ("result",),
    ("error",),
    ("params",),
    ("params", "name"),
    ("params", "uri"),
    ("params", "requestId"),
    ("params", "_meta", PROTOCOL_VERSION_META_KEY),
    ("result", "protocolVersion"),
)
prepare(ROUTED)

# An id, a method, a name or a version longer than this is nobody's: it is not decoded (and so not matched).
MAX_ROUTED_BYTES = 64 * 1024


async def scan_async(scanning: Generator[None, None, Scanned]) -> Scanned:
    """Run a scan's steps (`json_scan.steps`), letting the event loop run between them: a 64 MiB message takes
    seconds."""
    while True:
        try:
            next(scanning)
        except StopIteration as done:
            found: Scanned = done.value
            return found
        await asyncio.sleep(0)


# A message this short is decoded whole, in C: at most a few MiB of objects for a moment, and ten times faster
# than a scan, which is what an honest server's messages cost then (`bench/bridge.py`).
SMALL_MESSAGE_BYTES = 64 * 1024
LONG = object()  # a member that is there, but longer than MAX_ROUTED_BYTES: not decoded


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: its bytes may be 64 MiB
class Message:
    """One JSON-RPC message (or batch), as bytes: `raw[span]`, with its routed members' values (or LONG)."""

    raw: Data
    span: Span
    members: dict[Path, Any]
    is_batch: bool = False

    @classmethod
    async def read(cls, raw: Data, span: Span | None = None) -> Message:
        """The message that `raw` (or `raw[span]`) holds; NotJson when it is not one JSON object or array."""
        start, end = span or (0, len(raw))
        if end - start <= SMALL_MESSAGE_BYTES:
            decoded = _decoded(raw[start:end])
            if isinstance(decoded, dict | list):
                return cls(raw, (start, end), _routed(decoded), is_batch=isinstance(decoded, list))
        found = await scan_async(steps(raw, ROUTED, span=(start, end)))  # the last word, and for long messages
        members = {path: _value(raw, where) for path, where in found.spans.items()}
        return cls(raw, (start, end), members, is_batch=found.kind == "array")

    @classmethod
    async def of(cls, value: dict[str, Any]) -> Message:
        """A message of our own making."""
        return await cls.read(json.dumps(value, separators=(",", ":")).encode())

    @property
    def body(self) -> memoryview:
        """The message's bytes, without a copy."""
        start, end = self.span
        return memoryview(self.raw)[start:end]

    def has(self, *path: str) -> bool:
        return path in self.members

    def get(self, *path: str) -> Any:
        """The member's value, or None when it is absent or longer than MAX_ROUTED_BYTES."""
        value = self.members.get(path)
        return None if value is LONG else value

    @property
    def id(self) -> Any:
        return self.get("id")

    @property
    def method(self) -> str | None:
        method = self.get("method")
        return method if isinstance(method, str) else None

    @property
    def is_request(self) -> bool:
        return self.method is not None and self.has("id")

    @property
    def is_notification(self) -> bool:
        return self.method is not None and not self.has("id")

    @property
    def is_response(self) -> bool:
        return not self.has("method") and self.has("id") and (self.has("result") or self.has("error"))

    async def with_id(self, new_id: str) -> Message:
        """The same request under another id (a re-initialization of our own)."""
        found = await scan_async(steps(self.raw, [("id",)], span=self.span))
        start, end = found.spans[("id",)]
        view = memoryview(self.raw)
        raw = b"".join((view[self.span[0] : start], json.dumps(new_id).encode(), view[end : self.span[1]]))
        return await Message.read(raw)


def _decoded(text: Data) -> Any:
    """`text` decoded as JSON (RFC 8259: UTF-8, no NaN or Infinity), or None when json.loads will not: the scan
    decides then (it reads what json.loads refuses to, such as an integer of 5,000 digits)."""
    try:
        return json.loads(bytes(text).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _routed(decoded: dict[str, Any] | list[Any]) -> dict[Path, Any]:
    members: dict[Path, Any] = {}
    for path in ROUTED:
        value: Any = decoded
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            members[path] = value
    return members


def _value(raw: Data, span: Span) -> Any:
    return LONG if span[1] - span[0] > MAX_ROUTED_BYTES else decode(raw, span, MAX_ROUTED_BYTES)


async def batch_members(batch: Message) -> tuple[list[Message], int]:
    """The messages in a batch (each still a view into the batch's bytes), and how many elements were not one."""
    found = await scan_async(steps(batch.raw, span=batch.span, elements=True))
    items, skipped = [], 0
    for element in found.elements or []:
        try:
            items.append(await Message.read(batch.raw, element))
        except NotJson:  # a number, a string: not a message
            skipped += 1
    return items, skipped


def routing_headers(message: Message, negotiated_version: str | None) -> dict[str, str]:
    """`MCP-Protocol-Version` (and, for per-request versions, `Mcp-Method` / `Mcp-Name`) for one POST."""
    version = message.get("params", "_meta", PROTOCOL_VERSION_META_KEY)
    if not isinstance(version, str):
        return {"MCP-Protocol-Version": negotiated_version} if negotiated_version else {}
    headers = {"MCP-Protocol-Version": version}
    method = message.method
    if method is not None:
        headers["Mcp-Method"] = method
        name_key = NAME_BEARING_METHODS.get(method)
        name = message.get("params", name_key) if name_key else None
        if isinstance(name, str) and name.isascii() and name.isprintable() and name == name.strip():
            headers["Mcp-Name"] = name
    return headers


def protocol_version_of(result_message: Message) -> str | None:
    """The version an `initialize` result settled on."""
    version = result_message.get("result", "protocolVersion")
    return version if isinstance(version, str) else None


def lookup_id(value: Any) -> str | int | None:
    """`value` if it can be an id we look up: JSON-RPC ids are strings or integers (a list or an object from a
    broken or hostile peer is not; nor is a bool)."""
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def server_words(body: bytes) -> str:
    """What a server said in an error body, for one line of our error: a JSON-RPC error's message (the MCP SDKs
    answer `Bad Request: Missing session ID` so), else the readable start of the page; printable ASCII, bounded."""
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):
        return page_text(body)
    error = reply.get("error") if isinstance(reply, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str):
        return printable(message, SERVER_TEXT_LIMIT, ascii_only=True).strip()
    return page_text(body)
