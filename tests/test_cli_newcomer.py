"""What a new user met on a clean machine (issue 29 §6, §8), each as they ran it: configs that do not exist yet,
tables on an 80-column terminal, state words, `remove`, `remote ssh-config` and a config's mode. Real daemon,
real chctl, the project's API-key MCP server."""

from __future__ import annotations

import getpass
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import VENV_BIN, UserEnv
from tests.support.ports import closed_port
from tests.support.terminal import Terminal

# No agent on PATH: what `chctl clients` finds comes from the files alone.
BARE_PATH = os.pathsep.join([str(VENV_BIN), "/usr/bin", "/bin"])


@pytest.fixture
def bare_daemon(user_env: UserEnv) -> Iterator[DaemonProcess]:
    process = DaemonProcess(user_env, extra_env={"PATH": BARE_PATH}).start()
    yield process
    process.stop()


@pytest.fixture
def server(mcp_api_key_server: McpApiKeyServerFactory) -> McpApiKeyServer:
    return mcp_api_key_server()


def add(user_env: UserEnv, name: str, server: McpApiKeyServer, *args: str, cwd: Path | None = None) -> str:
    key = ("--url", server.url, "-k", server.key, "--key-header", server.header)
    done = chctl(user_env, "add", name, *key, *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def on_terminal(user_env: UserEnv, *args: str, columns: int) -> list[str]:
    term = Terminal(user_env, *args, columns=columns, extra_env={"COLUMNS": str(columns), "NO_COLOR": "1"})
    try:
        assert term.wait() == 0, term.output
    finally:
        term.close()
    return [line for line in term.output.replace("\r\n", "\n").splitlines() if line.strip()]


# --- §6 configs that do not exist yet ------------------------------------------------------------------------


def test_add_global_creates_opencodes_user_config_and_list_outside_a_project_reads_it(
    daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    user_config = user_env.global_config_dir / "opencode.json"
    assert not user_config.exists()
    add(user_env, "peer2", server, "--global")
    written = json.loads(user_config.read_text())
    assert written["$schema"] and written["mcp"]["peer2"]["url"] == server.url

    elsewhere = user_env.root / "elsewhere"  # no opencode.json up from here, and no git root
    elsewhere.mkdir()
    listed = chctl(user_env, "list", cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == str(user_config)
    assert "peer2" in listed.stdout


def test_add_in_a_project_without_a_config_names_init_and_global(
    daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    done = chctl(user_env, "add", "peer", "--url", server.url)
    assert done.returncode == 1 and "error[CONFIG_MISSING]" in done.stderr
    assert "`chctl init`" in done.stderr and "`chctl add peer --global`" in done.stderr


def test_clients_finds_a_client_by_its_own_files_and_shows_where_each_server_is(
    bare_daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    assert chctl(user_env, "init").returncode == 0
    add(user_env, "peer", server)  # the project's opencode.json
    add(user_env, "peer2", server, "--global")
    add(user_env, "peer3", server, "--client", "claude-code")  # chctl creates ~/.claude.json
    assert (user_env.home / ".claude.json").exists()

    rows = {row["client"]: row for row in json.loads(chctl(user_env, "clients", "--json").stdout)["clients"]}
    assert rows["claude-code"]["found"] is None  # the file chctl made is no sign of Claude Code
    assert rows["opencode"]["servers"]["peer"]["in_user_config"] is False
    assert rows["opencode"]["servers"]["peer2"]["in_user_config"] is True
    shown = chctl(user_env, "clients").stdout
    assert "peer (header, in a project), peer2 (header)" in shown

    (user_env.home / ".claude").mkdir()  # what Claude Code makes when it runs
    rows = {row["client"]: row for row in json.loads(chctl(user_env, "clients", "--json").stdout)["clients"]}
    assert rows["claude-code"]["found"] == str(user_env.home / ".claude")


# --- §8 words and widths ---------------------------------------------------------------------------------------


def test_status_and_clients_fit_80_columns_and_show_every_column_at_200(
    daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    assert chctl(user_env, "init").returncode == 0
    add(user_env, "peer", server)
    add(user_env, "peer3", server, "--client", "claude-code", "--client", "codex", "--client", "gemini")
    # A long note in LAST ERROR: a login that failed.
    assert chctl(user_env, "add", "unreachable", "--url", f"http://127.0.0.1:{closed_port()}/mcp").returncode == 0
    assert chctl(user_env, "auth", "unreachable", "--no-browser", input="").returncode == 1

    for command in ("status", "clients"):
        narrow = on_terminal(user_env, command, columns=80)
        assert max(len(line) for line in narrow) <= 80, "\n".join(narrow)
        wide = on_terminal(user_env, command, columns=200)
        assert max(len(line) for line in wide) > 80  # nothing had to go
    header = next(line for line in on_terminal(user_env, "status", columns=200) if line.startswith("NAME"))
    assert (
        header.split()
        == "NAME STATE AUTH EXPIRES NEXT REFRESH MODE SECRET AT CONFIGS BRIDGES LAST ERROR / NOTE".split()
    )
    narrow_rows = on_terminal(user_env, "status", columns=80)
    assert any(line.startswith("unreachable") and "login failed" in line for line in narrow_rows)


def test_auth_status_says_the_state_in_words(daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer) -> None:
    assert chctl(user_env, "init").returncode == 0
    add(user_env, "peer", server)
    done = chctl(user_env, "auth", "peer", "--status")
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == "peer: ok (API key)"
    assert not re.search(r"\b[a-z]+_[a-z]+\b", done.stdout)  # no `api_key`, `no_auth`: identifiers are not words


def test_remove_says_the_key_stays_and_forget_forgets_it(
    daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    assert chctl(user_env, "init").returncode == 0
    add(user_env, "peer", server)
    add(user_env, "peer", server, "--client", "claude-code")

    first = chctl(user_env, "remove", "peer")
    assert first.returncode == 0
    assert "peer is still in another config" in first.stdout and "its API key stays" in first.stdout

    second = chctl(user_env, "remove", "peer", "--client", "claude-code")
    assert "its API key stays stored, so `chctl status` still lists peer" in second.stdout
    assert "`chctl remove peer --forget`" in second.stdout
    [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    assert row["name"] == "peer" and row["configs"] == []

    add(user_env, "peer", server)
    forgot = chctl(user_env, "remove", "peer", "--forget")
    assert forgot.returncode == 0 and "forgot peer's API key" in forgot.stdout
    assert not (user_env.ch_home / "tokens" / "peer.json").exists()
    assert json.loads(chctl(user_env, "status", "--json").stdout)["servers"] == []


def test_ssh_config_uses_roots_real_home_and_says_the_home_is_a_guess(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "remote", "ssh-config", "box")
    assert done.returncode == 0, done.stderr
    user = getpass.getuser()  # `ssh -G box` with no Host block for it: the local name
    home = "/root" if user == "root" else f"/home/{user}"
    assert f"RemoteForward {home}/.context-harness/delegate.sock " in done.stdout
    assert f"note: guessed {user}'s home on box to be {home}" in done.stderr
    assert "--remote-path PATH" in done.stderr

    given = chctl(user_env, "remote", "ssh-config", "box", "--user", "root")
    assert "RemoteForward /root/.context-harness/delegate.sock " in given.stdout  # never /home/root


@pytest.mark.skipif(sys.platform == "win32", reason="Unix modes")
def test_a_config_made_private_for_an_inline_key_is_said_once(
    daemon: DaemonProcess, user_env: UserEnv, server: McpApiKeyServer
) -> None:
    assert chctl(user_env, "init").returncode == 0
    config = user_env.project / "opencode.json"
    config.chmod(0o644)  # as an editor or opencode would have left it
    said = add(user_env, "peer", server)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f"{config} is now mode 600 (was 644): it holds a secret inline" in said
    again = add(user_env, "peer", server)
    assert "is now mode" not in again
