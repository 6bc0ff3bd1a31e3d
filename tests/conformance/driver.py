"""What every conformance adapter does once its stdio MCP server is set up: the `mcp` SDK's own client over
stdio, as an agent would: `initialize`, `tools/list`, then a call of each tool with arguments that fit its
schema. Elicitation requests are accepted with the schema's defaults (SEP-1034: the client applies them).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from mcp.client.client import Client
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, ErrorData

# A tool call refused for a reason a person can fix (a login, more scopes) is tried again after the fix, at most
# this many times: a person gives up too.
MAX_FIXES = 2

# A refused call's error text; the adapter answers whether it fixed what it says (then the call is tried again).
Fixer = Callable[[str], Awaitable[bool]]


def log(message: str) -> None:
    print(f"adapter: {message}", file=sys.stderr, flush=True)


def example_value(schema: Any) -> Any:
    """A value of the type a JSON schema asks for: enough for the suite's tools."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and "default" in schema:
        return schema["default"]
    return {"number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}.get(str(kind), "x")


def arguments_for(input_schema: dict[str, Any]) -> dict[str, Any]:
    properties = input_schema.get("properties") or {}
    required = input_schema.get("required") or []
    return {name: example_value(properties.get(name)) for name in required}


async def accept_with_defaults(_context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    schema = getattr(params, "requested_schema", None) or {}
    properties = schema.get("properties") or {}
    content = {
        name: prop["default"] for name, prop in properties.items() if isinstance(prop, dict) and "default" in prop
    }
    return ElicitResult(action="accept", content=content)


async def exercise(
    server: StdioServerParameters, fix: Fixer | None = None, *, errlog: TextIO = sys.stderr, mode: str = "legacy"
) -> int:
    """Initialize, list the tools and call each; 0 when every step worked, 1 otherwise."""
    try:
        return await _exercise(server, fix, errlog, mode)
    except Exception as error:  # the suite only reads the exit code: say what broke
        log(f"failed: {type(error).__name__}: {error}")
        return 1


async def _exercise(server: StdioServerParameters, fix: Fixer | None, errlog: TextIO, mode: str) -> int:
    transport = stdio_client(server, errlog=errlog)
    async with Client(
        transport, mode=mode, elicitation_callback=accept_with_defaults, read_timeout_seconds=25
    ) as client:
        log(f"initialized: protocol {client.protocol_version}")
        tools = (await client.list_tools()).tools
        log(f"tools: {[tool.name for tool in tools]}")
        failures = 0
        for tool in tools:
            result = await _call(client, tool.name, arguments_for(tool.input_schema), fix)
            if isinstance(result, ErrorData) or result.is_error:
                failures += 1
        return 1 if failures else 0


async def _call(client: Client, name: str, arguments: dict[str, Any], fix: Fixer | None) -> CallToolResult | ErrorData:
    for attempt in range(MAX_FIXES + 1):
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as refused:
            log(f"{name}: error {refused.error.code}: {refused.error.message}")
            if fix is None or attempt == MAX_FIXES or not await fix(refused.error.message):
                return refused.error
            continue
        log(f"{name}: {'error result' if result.is_error else 'ok'}")
        return result
    raise AssertionError("unreachable")
