"""JSON-RPC messages as the relay sees them: what kind a message is, the HTTP headers that route it, and what a
server said in an error body. Pure functions, no I/O. The relay's own error replies are `primitives.relay_errors`."""

from __future__ import annotations

import json
from typing import Any

from context_harness.oauth.preflight import page_text
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable

# Protocol revisions negotiated by `initialize`; a later revision carries its version in every request's
# `_meta` and wants it, the method and the name mirrored in headers.
PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def is_request(message: dict[str, Any]) -> bool:
    return isinstance(message.get("method"), str) and "id" in message


def is_notification(message: dict[str, Any]) -> bool:
    return isinstance(message.get("method"), str) and "id" not in message


def is_response(message: dict[str, Any]) -> bool:
    return "method" not in message and "id" in message and ("result" in message or "error" in message)


def routing_headers(message: dict[str, Any], negotiated_version: str | None) -> dict[str, str]:
    """`MCP-Protocol-Version` (and, for per-request versions, `Mcp-Method` / `Mcp-Name`) for one POST."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(version, str):
        return {"MCP-Protocol-Version": negotiated_version} if negotiated_version else {}
    headers = {"MCP-Protocol-Version": version}
    method = message.get("method")
    if isinstance(method, str):
        headers["Mcp-Method"] = method
        name_key = NAME_BEARING_METHODS.get(method)
        name = params.get(name_key) if name_key and isinstance(params, dict) else None
        if isinstance(name, str) and name.isascii() and name.isprintable() and name == name.strip():
            headers["Mcp-Name"] = name
    return headers


def protocol_version_of(result_message: dict[str, Any]) -> str | None:
    """The version an `initialize` result settled on."""
    result = result_message.get("result")
    version = result.get("protocolVersion") if isinstance(result, dict) else None
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
