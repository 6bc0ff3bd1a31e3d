"""`chctl bridge NAME` as an agent starts it, for the MCP SDK's stdio client."""

from __future__ import annotations

import sys

from mcp.client.stdio import StdioServerParameters

from tests.support.env import UserEnv


def bridge_params(user_env: UserEnv, name: str) -> StdioServerParameters:
    """The bridge for `name` in `user_env`, with no daemon autostart (the test runs its own)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "context_harness.client.chctl", "bridge", name],
        env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
        cwd=str(user_env.project),
    )
