"""`chctl add` with no name: on a terminal, pick from the registry and be asked for what the server needs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.terminal import Terminal


def test_without_a_terminal_a_missing_name_is_a_usage_error(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    done = chctl(user_env, "add")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: chctl add")
    assert "NAME is required" in done.stderr


def test_pick_an_api_key_server_by_number_and_type_the_key_hidden(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    term = Terminal(user_env, "add")
    try:
        listing = term.read_until("server to add (1-")
        number = re.search(r"^(\d+)\s+context7\s+API key\s+\S", listing, re.MULTILINE).group(1)
        assert re.search(r"^\d+\s+linear\s+login\s+", listing, re.MULTILINE)
        term.send(number + "\n")
        term.read_until("API key for context7 (hidden): ")
        term.send("typed-key-not-real\n")
        assert term.wait() == 0, term.output
    finally:
        term.close()
    assert "typed-key-not-real" not in term.output
    assert "added context7 to" in term.output
    written = json.loads((user_env.project / "opencode.json").read_text())
    assert written["mcp"]["context7"]["headers"] == {"CONTEXT7_API_KEY": "typed-key-not-real"}


@pytest.fixture
def daemon_knowing_srv(user_env: UserEnv, mcp_oauth_server: McpOAuthServer) -> Iterator[DaemonProcess]:
    """The daemon with the test's OAuth MCP server in the user's registry, as `srv`."""
    user_env.ch_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = {"name": "srv", "url": mcp_oauth_server.url, "auth_type": "oauth", "description": "the test server"}
    (user_env.ch_home / "registry.json").write_text(json.dumps({"servers": [entry]}))
    process = DaemonProcess(user_env).start()
    yield process
    process.stop()


def test_pick_an_oauth_server_by_name_and_log_in_right_away(
    daemon_knowing_srv: DaemonProcess, user_env: UserEnv
) -> None:
    chctl(user_env, "init")
    term = Terminal(user_env, "add", extra_env={"BROWSER": browser_command()})
    try:
        listing = term.read_until("server to add (1-")
        assert "the test server" in listing
        term.send("srv\n")
        term.read_until("log in to srv now? [Y/n] ")
        term.send("\n")
        assert term.wait(60) == 0, term.output
    finally:
        term.close()
    assert "logged in to srv" in term.output
    written = json.loads((user_env.project / "opencode.json").read_text())
    assert written["mcp"]["srv"]["headers"]["Authorization"].startswith("Bearer ")
