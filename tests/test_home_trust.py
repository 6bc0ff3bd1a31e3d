"""A CH_HOME (or its settings, registry, bindings, tokens, clients) that is not the user's own is refused at
start, never silently chmod-ed. The socket's directory: tests/test_socket_trust.py."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, socket_answers, wait_for
from tests.support.env import UserEnv

NOBODY = 65534


def start_daemon(user_env: UserEnv) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "context_harness.daemon"],
        env=user_env.vars(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def plant_event_command(user_env: UserEnv) -> Path:
    """What an attacker with write access to CH_HOME would leave: a command the daemon runs on token events."""
    marker = user_env.root / "pwned"
    user_env.ch_home.mkdir(mode=0o700, exist_ok=True)
    (user_env.ch_home / "daemon.env").write_text(f'CH_EVENT_COMMAND=["touch", "{marker}"]\n')
    (user_env.ch_home / "daemon.env").chmod(0o600)
    return marker


def _world_writable_home(home: Path) -> Path:
    home.chmod(0o777)
    return home


def _group_writable_settings(home: Path) -> Path:
    (home / "daemon.env").chmod(0o664)
    return home / "daemon.env"


def _tokens_of_another_user(home: Path) -> Path:
    (home / "tokens").mkdir(mode=0o700)
    os.chown(home / "tokens", NOBODY, NOBODY)
    return home / "tokens"


def _registry_of_another_user(home: Path) -> Path:
    (home / "registry.json").write_text('{"servers": [{"name": "linear", "url": "https://evil.example/mcp"}]}')
    os.chown(home / "registry.json", NOBODY, NOBODY)
    return home / "registry.json"


def _registry_cache_open_to_others(home: Path) -> Path:
    (home / "cache" / "registries").mkdir(mode=0o700, parents=True)
    (home / "cache" / "registries").chmod(0o777)  # a planted answer would choose where `chctl add` points
    return home / "cache" / "registries"


def _home_of_another_user(home: Path) -> Path:
    os.chown(home, NOBODY, NOBODY)
    return home


def _world_writable_clients(home: Path) -> Path:
    (home / "clients").mkdir(mode=0o700)
    (home / "clients").chmod(0o777)
    return home / "clients"


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize(
    "plant",
    [
        _world_writable_home,
        _group_writable_settings,
        _tokens_of_another_user,
        _registry_of_another_user,
        _registry_cache_open_to_others,
        _home_of_another_user,
        _world_writable_clients,
    ],
)
def test_an_untrusted_home_is_refused_naming_the_path_and_the_fix(
    user_env: UserEnv, plant: Callable[[Path], Path]
) -> None:
    marker = plant_event_command(user_env)
    bad = plant(user_env.ch_home)
    mode_before = stat.S_IMODE(bad.stat().st_mode)
    done = start_daemon(user_env)
    assert done.returncode == 1
    assert f"refusing to start: {bad} " in done.stderr, done.stderr
    assert "chmod go-w" in done.stderr and "Traceback" not in done.stderr
    assert stat.S_IMODE(bad.stat().st_mode) == mode_before  # not quietly "fixed" with the plant still inside
    assert not socket_answers(user_env.socket)
    assert not marker.exists()


def test_the_users_own_home_with_a_readable_mode_is_accepted_and_left_alone(user_env: UserEnv) -> None:
    user_env.ch_home.mkdir(mode=0o755)
    user_env.ch_home.chmod(0o755)
    process = DaemonProcess(user_env).start()
    try:
        assert stat.S_IMODE(user_env.ch_home.stat().st_mode) == 0o755
    finally:
        process.stop()


def test_a_settings_file_opened_up_while_running_is_not_reloaded(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env).start()
    try:
        marker = plant_event_command(user_env)
        (user_env.ch_home / "daemon.env").chmod(0o666)  # someone else could have written it
        process.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: any(e.get("event") == "reload_refused" for e in process.log_events()), 10, what="reload refusal"
        )
        assert "daemon.env" in next(e["problem"] for e in process.log_events() if e.get("event") == "reload_refused")
        assert socket_answers(user_env.socket) and not marker.exists()
    finally:
        process.stop()
