"""What the registry tests share: a daemon pointed at local registries, and chctl run from an async test (the
registries are served in the test's own event loop, so chctl runs in a thread while the loop answers it)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.peers.mcp_registry import LocalRegistry, remote, server_json
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(user_env: UserEnv) -> Iterator[StartDaemon]:
    """`start_daemon(*registries, **env)`: the daemon with CH_REGISTRY_URL naming `registries` (their bases, or
    any URL strings), stopped after the test."""
    started: list[DaemonProcess] = []

    def start(*registries: LocalRegistry | str, **env: str) -> DaemonProcess:
        urls = ",".join(r if isinstance(r, str) else r.base for r in registries)
        daemon = DaemonProcess(user_env, extra_env={"CH_REGISTRY_URL": urls, **env}).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


async def run(user_env: UserEnv, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`chctl ARGS` in a thread: the registry in this loop answers it meanwhile."""
    return await asyncio.to_thread(chctl, user_env, *args, **options)


def secret(name: str, description: str = "", **more: Any) -> dict[str, Any]:
    """A required secret header, as server.json declares one."""
    return {"name": name, "description": description, "isRequired": True, "isSecret": True, **more}


def keyed_server(name: str, url: str, header: str = "X-API-Key", **fields: Any) -> dict[str, Any]:
    """server.json of a remote that wants a key in `header`."""
    return server_json(
        name, "A keyed test server", remotes=[remote(url, headers=[secret(header, "your key")])], **fields
    )
