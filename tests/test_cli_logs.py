"""`chctl logs [-n N] [-f]`: the daemon's log from where it goes, readable on a terminal, raw in a pipe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_harness.client.logs import log_source, render
from tests.support.daemon import chctl
from tests.support.env import UserEnv
from tests.support.terminal import Terminal


def test_the_log_is_the_journal_under_systemd_the_launchd_file_on_macos_else_daemon_log(tmp_path: Path) -> None:
    home, config, ch_home = tmp_path / "home", tmp_path / "home/.config", tmp_path / "home/.context-harness"
    paths = {"home": str(home), "config_home": str(config), "ch_home": str(ch_home)}
    assert log_source(platform="linux", **paths) == str(ch_home / "daemon.log")

    unit = config / "systemd/user/context-harness.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    assert log_source(platform="linux", **paths) == [
        "journalctl",
        "--user",
        "-u",
        "context-harness.service",
        "-o",
        "cat",
        "--no-pager",
    ]

    plist = home / "Library/LaunchAgents/ai.context-harness.daemon.plist"
    plist.parent.mkdir(parents=True)
    plist.write_text("<plist/>")
    assert log_source(platform="darwin", **paths) == str(home / "Library/Logs/context-harness/daemon.log")


def test_a_json_line_is_rendered_as_time_level_event_and_fields() -> None:
    line = '{"server": "linear", "reason": "HTTP 503", "event": "token_refresh_failed", "level": "warning", ' + (
        '"timestamp": "2026-11-28T10:52:05.123Z"}'
    )
    shown = render(line, colour=False)
    assert shown.endswith(' warning token_refresh_failed server=linear reason="HTTP 503"')
    assert shown[:8].count(":") == 2
    assert render(line, colour=True).split()[1] == "\x1b[33mwarning\x1b[0m"
    assert render("not json", colour=False) == "not json"


@pytest.fixture
def autostarted(user_env: UserEnv) -> Iterator[Path]:
    """A daemon chctl started itself, so it logs to CH_HOME/daemon.log."""
    started = chctl(user_env, "daemon", "start", autostart=True)
    assert started.returncode == 0, started.stderr
    try:
        assert chctl(user_env, "init").returncode == 0
        yield user_env.ch_home / "daemon.log"
    finally:
        chctl(user_env, "daemon", "stop")


def test_n_lines_raw_in_a_pipe_and_readable_on_a_terminal(autostarted: Path, user_env: UserEnv) -> None:
    assert chctl(user_env, "add", "exa").returncode == 0
    piped = chctl(user_env, "logs", "-n", "2")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == autostarted.read_text().splitlines()[-2:]

    term = Terminal(user_env, "logs", "-n", "2")
    try:
        assert term.wait() == 0
    finally:
        term.close()
    shown = term.output.replace("\r\n", "\n").splitlines()
    assert len(shown) == 2 and not any(line.startswith("{") for line in shown)
    assert any(" server_added " in line and "server=exa" in line for line in shown), shown


def test_follow_shows_new_lines_as_they_come_until_ctrl_c(autostarted: Path, user_env: UserEnv) -> None:
    last_event = json.loads(autostarted.read_text().splitlines()[-1])["event"]
    term = Terminal(user_env, "logs", "-f", "-n", "1")
    try:
        term.read_until(last_event)  # it has read to the end: what comes now is new
        assert chctl(user_env, "add", "exa").returncode == 0
        term.read_until("server_added")
        term.send("\x03")
        assert term.wait() == 130
    finally:
        term.close()


def test_without_a_log_it_says_where_it_looked(user_env: UserEnv) -> None:
    done = chctl(user_env, "logs")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error[NOT_FOUND]: no daemon log at {user_env.ch_home / 'daemon.log'}")
    assert "  hint: " in done.stderr
