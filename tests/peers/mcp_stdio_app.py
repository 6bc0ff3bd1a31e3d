"""A real MCP server (the `mcp` SDK's MCPServer) over stdio, as a local config entry starts it.

Run:  python tests/peers/mcp_stdio_app.py
Tools: echo(text) -> text; greeting() -> the value of $STDIO_PEER_GREETING (shows the entry's environment
reached the server). With $STDIO_PEER_HANG set it reads its stdin and never answers (a server that hangs).
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer


def main() -> None:
    if os.environ.get("STDIO_PEER_HANG"):
        for _line in sys.stdin:
            pass
        return
    server = MCPServer(name=f"stdio-peer-{os.environ.get('STDIO_PEER_GREETING', 'none')}")

    @server.tool()
    def echo(text: str) -> str:
        return text

    @server.tool()
    def greeting() -> str:
        return os.environ.get("STDIO_PEER_GREETING", "")

    server.run("stdio")


if __name__ == "__main__":
    main()
