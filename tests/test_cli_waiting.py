"""`chctl auth` while it waits for the browser, and chctl while it starts the daemon: it says what it does."""

from __future__ import annotations

import json
import re
import shutil
import site
import socket
import subprocess
import sys
import time
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


def slow_starting_python(tmp_path: Path) -> Path:
    """An interpreter that starts the daemon (only the daemon) 1.5 s late: a venv on top of ours with a `.pth`
    file that sleeps. chctl starts the daemon with its own interpreter and `-I`, which ignores PYTHONPATH and
    so any `sitecustomize` on it; `.pth` files in site-packages still run."""
    venv = tmp_path / "slow-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    [ours] = [p for p in site.getsitepackages() if Path(p).is_relative_to(sys.prefix)]
    (site_packages / "a_our_venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    (site_packages / "b_slow_daemon.pth").write_text(
        "import sys, time; 'context_harness.daemon' in sys.orig_argv and time.sleep(1.5)\n"
    )
    return venv / "bin" / "python"


def test_an_autostart_that_takes_more_than_half_a_second_says_so(user_env: UserEnv, tmp_path: Path) -> None:
    python = slow_starting_python(tmp_path)
    try:
        started = time.monotonic()
        done = subprocess.run(
            [str(python), "-m", "context_harness.client.chctl", "status"],
            env=user_env.vars(),
            cwd=user_env.project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started >= 1.5  # the daemon did start late: the case under test
        assert done.stderr.splitlines()[0] == "starting the daemon…"
        pid = json.loads(chctl(user_env, "daemon", "status", "--json").stdout)["pid"]
        assert "slow-venv" in Path(f"/proc/{pid}/cmdline").read_text()  # the daemon the slow interpreter started
        again = chctl(user_env, "status")  # running now: nothing to say
        assert again.returncode == 0 and "starting" not in again.stderr
    finally:
        chctl(user_env, "daemon", "stop")
