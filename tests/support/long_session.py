"""One bridged MCP session kept busy over several token lifetimes: every call must be answered."""

from __future__ import annotations

import asyncio
import time

from tests.support.env import UserEnv


async def tokens_seen_over(user_env: UserEnv, name: str, lifetimes: int, lifetime_s: float, whoami: str) -> set[str]:
    """Call `token_id` through `chctl bridge NAME` for `lifetimes` token lifetimes (and at least 30 calls, however
    slow a loaded machine makes each); the first `whoami` must answer `whoami`. The distinct tokens the server saw;
    any failed call fails the test."""
    from tests.test_bridge import bridged_session, call

    calls, seen = 0, set()
    async with bridged_session(user_env, name) as client:
        assert await call(client, "whoami") == whoami
        deadline = time.monotonic() + lifetimes * lifetime_s + 1
        while time.monotonic() < deadline or calls < 30:
            seen.add(await call(client, "token_id"))
            calls += 1
            await asyncio.sleep(0.25)  # the pace of the calls, not synchronisation
    return seen
