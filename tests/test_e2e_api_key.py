"""End to end: an API-key MCP server (the `mcp` SDK), `chctl add`, and the real `opencode mcp list`."""

from __future__ import annotations

import json
import stat

import pytest

from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.opencode import mcp_list


@pytest.mark.parametrize("mode", ["inline", "file"])
@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_opencode_connects_with_the_key_we_wrote(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory, mode: str, header: str
) -> None:
    server = mcp_api_key_server(header=header)
    chctl(user_env, "init")
    done = chctl(
        user_env,
        "add",
        "srv",
        "--url",
        server.url,
        "--api-key-env",
        "SRV_KEY",
        "--key-header",
        header,
        "--secret-mode",
        mode,
        extra_env={"SRV_KEY": server.key},
    )
    assert done.returncode == 0, done.stderr
    config_text = (user_env.project / "opencode.json").read_text()
    if mode == "file":
        assert server.key not in config_text  # the secret stays out of a file that may be committed
        secret = user_env.ch_home / "secrets" / "srv.token"
        assert secret.read_text() == server.key
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert "{file:~/.context-harness/secrets/srv.token}" in config_text
    else:
        assert server.key in config_text
    assert mcp_list(user_env) == {"srv": "connected"}


def test_a_wrong_key_does_not_connect(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    chctl(user_env, "init")
    done = chctl(user_env, "add", "srv", "--url", server.url, "-k", "wrong-key", "--key-header", "X-API-Key")
    assert done.returncode == 0, done.stderr
    assert mcp_list(user_env) == {"srv": "failed"}


def test_key_file_is_0600_in_a_0700_dir_and_never_in_the_log(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    chctl(user_env, "init")
    done = chctl(user_env, "add", "srv", "--url", server.url, "-k", server.key, "--key-header", "X-API-Key")
    assert done.returncode == 0
    token_file = user_env.ch_home / "tokens" / "srv.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert json.loads(token_file.read_text())["api_key"] == server.key
    assert server.key not in daemon.log()
    assert server.key not in done.stdout + done.stderr
