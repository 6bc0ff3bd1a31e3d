"""`chctl auth` while it waits for the browser, and chctl while it starts the daemon: it says what it does."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.peers.mcp_servers import McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.terminal import Terminal

# A "browser" that accepts the URL and does nothing with it: the login waits until cancelled or timed out.
IDLE_BROWSER = {"BROWSER": f"{shutil.which('true')} %s"}


@pytest.fixture
def added(daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer) -> McpOAuthServer:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "srv", "--url", mcp_oauth_server.url).returncode == 0
    return mcp_oauth_server


def port_refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_on_a_terminal_the_waiting_line_counts_down_in_place_and_ctrl_c_cancels_the_flow_in_the_daemon(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer
) -> None:
    term = Terminal(user_env, "auth", "srv", extra_env=IDLE_BROWSER)
    try:
        term.read_until("left, Ctrl-C cancels")
        wait_for(
            lambda: (
                term.read_until("\r\x1b[K", deadline_s=5, start=len(term.output))
                and len(set(re.findall(r"waiting for the browser… (\d+:\d\d) left", term.output))) >= 2
            ),
            10,
            what="the line to be redrawn with less time left",
        )
        assert "\r\x1b[Kwaiting for the browser… 4:5" in term.output
        callback_port = int(re.search(r"redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A(\d+)", term.output).group(1))
        assert not port_refuses(callback_port)

        term.send("\x03")  # Ctrl-C, as the terminal delivers it: SIGINT to chctl
        assert term.wait() == 130
    finally:
        term.close()
    assert "cancelled the login to srv" in term.output
    wait_for(lambda: port_refuses(callback_port), 10, what="the daemon to close the callback listener")
    assert any(e.get("event") == "authorization_flow_cancelled" for e in daemon.log_events())


def test_without_a_terminal_the_waiting_line_is_a_plain_line(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer
) -> None:
    done = chctl(user_env, "auth", "srv", "--timeout", "2", extra_env=IDLE_BROWSER)
    assert done.returncode == 1
    assert "waiting for the browser… 0:02 left, Ctrl-C cancels\n" in done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert "error[TIMEOUT]" in done.stderr and "`chctl auth srv --timeout 600`" in done.stderr


def test_an_autostart_that_takes_more_than_half_a_second_says_so(user_env: UserEnv, tmp_path: Path) -> None:
    slow = tmp_path / "slow_start"
    slow.mkdir()
    # Python runs sitecustomize at start-up: this one makes the daemon (only the daemon) start 1.5 s late.
    (slow / "sitecustomize.py").write_text(
        "import sys, time\nif 'context_harness.daemon' in sys.orig_argv:\n    time.sleep(1.5)\n"
    )
    try:
        done = chctl(user_env, "status", autostart=True, extra_env={"PYTHONPATH": str(slow)})
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0] == "starting the daemon…"
        again = chctl(user_env, "status")  # running now: nothing to say
        assert again.returncode == 0 and "starting" not in again.stderr
    finally:
        chctl(user_env, "daemon", "stop")
