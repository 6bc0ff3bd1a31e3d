from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv, make_user_env

pytest_plugins = [
    "tests.peers.oidc",
    "tests.peers.mcp_servers",
    "tests.peers.workers_oauth",
    "tests.support.keychain",  # the `keychain` fixture
    "tests.support.registry",  # `start_daemon` with local MCP registries
]


@pytest.fixture
def user_env(tmp_path_factory: pytest.TempPathFactory) -> UserEnv:
    return make_user_env(Path(tmp_path_factory.mktemp("u")))


@pytest.fixture
def daemon(user_env: UserEnv) -> Iterator[DaemonProcess]:
    process = DaemonProcess(user_env).start()
    yield process
    process.stop()
