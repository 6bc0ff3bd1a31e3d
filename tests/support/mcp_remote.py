"""The real mcp-remote (npm, pinned in tests/peers), logging in headless as a person would."""

from __future__ import annotations

from pathlib import Path

from tests.support.env import UserEnv
from tests.support.headless_login import log_in_headless

PEERS = Path(__file__).resolve().parents[1] / "peers"
MCP_REMOTE_CLIENT = PEERS / "node_modules" / "mcp-remote" / "dist" / "client.js"


def mcp_remote_login(env: UserEnv, server_url: str) -> Path:
    """`mcp-remote-client URL` logs in (its callback is on localhost), lists the tools and exits 0.
    Returns its store, `~/.mcp-auth/mcp-remote-v1`."""
    log_in_headless(
        ["node", str(MCP_REMOTE_CLIENT), server_url], env.vars(), env.project, rb"visiting:\s*(https?://\S+)"
    )
    return env.home / ".mcp-auth" / "mcp-remote-v1"
