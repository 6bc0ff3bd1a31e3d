"""A real FastMCP server (PyPI `fastmcp`, pinned in pyproject's test extra) guarded by FastMCP's own in-memory OAuth
provider: Dynamic Client Registration, an authorization endpoint that approves at once, rotating refresh tokens,
and RFC 7009 revocation. Its registration endpoint (the MCP Python SDK's, FastMCP 4.2.3) registers the method the
client asks for: a request for `none`, as ours is, gets a public client and no secret; only a request that names
no method gets a secret and `client_secret_post`. Its revocation endpoint wants a `client_secret` field even from
a public client (an empty one will do).

Run:  python tests/peers/fastmcp_app.py [--port 0]
When serving it prints one line: {"url": "http://127.0.0.1:PORT/mcp", "port": PORT}. It exits when stdin closes,
or on SIGTERM/SIGINT. Tool: echo(text) -> text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.auth.providers.in_memory import InMemoryOAuthProvider
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp_server_app import exit_when_stdin_closes  # beside this file: run as a script, its folder is on sys.path

MCP_PATH = "/mcp"


def build_app(base_url: str) -> object:
    provider = InMemoryOAuthProvider(
        base_url=base_url,
        client_registration_options=ClientRegistrationOptions(enabled=True),
        revocation_options=RevocationOptions(enabled=True),
    )
    server = FastMCP("fastmcp-peer", auth=provider)

    @server.tool
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    return server.http_app(path=MCP_PATH)


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(build_app(base_url), log_level="warning", timeout_graceful_shutdown=2, lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    exit_when_stdin_closes(server, asyncio.get_running_loop())
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.02)  # inside the peer, not test synchronisation: uvicorn has no started event
    print(json.dumps({"url": base_url + MCP_PATH, "port": port}), flush=True)
    await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))
