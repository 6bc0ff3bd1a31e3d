"""Where the daemon's settings come from (issue 30 §10): daemon.env and the documented `CH_*`, proxy and trust
store variables of the command that starts it, nothing else — so a script using the Python API cannot leave its
proxy or its event command in force for every later use. Tested as the attack with the real chctl, chctl bridge,
the Python API in a script of its own and the daemon's own environment (/proc/PID/environ); and `chctl doctor`
says where each setting came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl, socket_answers, wait_for
from tests.support.env import UserEnv

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/PID/environ")

SCRIPT_SETTINGS = {
    "HTTPS_PROXY": "http://script-proxy.example:3128",
    "HTTP_PROXY": "http://script-proxy.example:3128",
    "CH_EVENT_COMMAND": '["/bin/sh", "-c", "echo script-event >> /tmp/never"]',
    "CH_BACKOFF_MAX_S": "7",
}
NOT_SETTINGS = {"OPENAI_API_KEY": "sk-a-script-secret", "CH_NOT_A_SETTING": "1", "PYTHONSTARTUP": "/tmp/x.py"}


def daemon_environ(user_env: UserEnv) -> dict[str, str]:
    done = chctl(user_env, "daemon", "status", "--json")
    assert done.returncode == 0, done.stderr
    raw = Path(f"/proc/{json.loads(done.stdout)['pid']}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.fixture
def stop_daemon(user_env: UserEnv) -> Iterator[None]:
    """Whatever started it in the test, the daemon is stopped after."""
    yield
    if socket_answers(user_env.socket):
        chctl(user_env, "daemon", "stop")


def run_script(user_env: UserEnv, source: str, env: dict[str, str]) -> dict[str, object]:
    """A Python script using the API, with an environment of its own; it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env={**user_env.vars(), **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed: dict[str, object] = json.loads(done.stdout)
    return printed


ASK = """
    import json, sys
    from context_harness.api import ensure_valid_token
    found = ensure_valid_token("keyed"{extra})
    print(json.dumps({{"ok": hasattr(found, "value"), "code": getattr(getattr(found, "code", None), "value", None),
                       "hint": getattr(found, "hint", None)}}))
"""


# --- the attack -----------------------------------------------------------------------------------------------


def test_a_script_using_the_api_leaves_no_setting_of_its_own_in_the_daemon(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory, stop_daemon: None
) -> None:
    asked = run_script(user_env, ASK.format(extra=""), {**SCRIPT_SETTINGS, **NOT_SETTINGS})
    assert asked["ok"] is False and asked["code"] == "DAEMON_UNAVAILABLE"
    assert "autostart=True" in str(asked["hint"]) and "chctl daemon start" in str(asked["hint"])
    assert not socket_answers(user_env.socket)  # it started nothing

    server = mcp_api_key_server()
    assert chctl(user_env, "init", autostart=True).returncode == 0  # the user's own shell starts it
    done = chctl(user_env, "add", "keyed", "--url", server.url, "--key-header", server.header, "-k", server.key)
    assert done.returncode == 0, done.stderr
    environ = daemon_environ(user_env)
    assert not set(SCRIPT_SETTINGS) & set(environ), environ
    assert run_script(user_env, ASK.format(extra=""), SCRIPT_SETTINGS)["ok"] is True  # a daemon runs: it answers


def test_autostart_from_the_api_takes_daemon_env_alone(user_env: UserEnv, stop_daemon: None) -> None:
    user_env.ch_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (user_env.ch_home / "daemon.env").write_text("CH_BACKOFF_BASE_S=2\n")
    (user_env.ch_home / "daemon.env").chmod(0o600)
    asked = run_script(user_env, ASK.format(extra=", autostart=True"), {**SCRIPT_SETTINGS, **NOT_SETTINGS})
    assert asked["code"] == "NOT_FOUND"  # it started one, which answered
    environ = daemon_environ(user_env)
    assert not (set(SCRIPT_SETTINGS) | set(NOT_SETTINGS)) & set(environ), environ
    assert {"CH_LOG_LEVEL", "CH_MIN_REFRESH_SPACING_S"} & set(environ) == set()  # the caller's settings, none
    assert environ["CH_HOME"] == str(user_env.ch_home) and environ["HOME"] == str(user_env.home)
    sources = setting_sources_shown(user_env)
    assert "CH_BACKOFF_BASE_S is set by daemon.env" in sources
    assert "CH_EVENT_COMMAND" not in " ".join(s for s in sources if "is set by" in s)


def test_chctl_and_chctl_bridge_start_it_with_their_documented_settings_only(
    user_env: UserEnv, stop_daemon: None
) -> None:
    shell = {**SCRIPT_SETTINGS, **NOT_SETTINGS, "CH_NO_AUTOSTART": "0"}
    done = chctl(user_env, "status", autostart=True, extra_env=shell)
    assert done.returncode == 0, done.stderr
    first = daemon_environ(user_env)
    assert chctl(user_env, "daemon", "stop").returncode == 0
    bridge = subprocess.Popen(
        [sys.executable, "-m", "context_harness.client.chctl", "bridge", "nothing"],
        env={**user_env.vars(), **shell},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket_answers(user_env.socket), 30, what="the bridge to start the daemon")
        second = daemon_environ(user_env)
    finally:
        assert bridge.stdin is not None
        bridge.stdin.close()
        bridge.wait(10)
    for environ in (first, second):
        assert {name: environ.get(name) for name in SCRIPT_SETTINGS} == SCRIPT_SETTINGS
        assert environ["CH_LOG_LEVEL"] == "debug" and environ["XDG_CONFIG_HOME"] == str(user_env.config_home)
        assert not set(NOT_SETTINGS) & set(environ) and "CH_NO_AUTOSTART" not in environ, environ


# --- doctor: where each setting came from ----------------------------------------------------------------------


def setting_sources_shown(user_env: UserEnv) -> list[str]:
    done = chctl(user_env, "doctor", "--json")
    return [c["message"] for c in json.loads(done.stdout) if c["name"] == "setting_source"]


def test_doctor_says_where_each_setting_came_from(user_env: UserEnv) -> None:
    user_env.ch_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env_file = user_env.ch_home / "daemon.env"
    env_file.write_text('CH_BACKOFF_MAX_S=100\nCH_EVENT_COMMAND=["true"]\nhttps_proxy=http://u:pw@proxy.corp:3128\n')
    env_file.chmod(0o600)
    daemon = DaemonProcess(user_env, extra_env={"CH_EVENT_COMMAND": '["false"]'}).start()
    try:
        shown = setting_sources_shown(user_env)
    finally:
        daemon.stop()
    started_by = "the environment of the command that started the daemon"
    assert f"CH_EVENT_COMMAND is set by {started_by}" in shown  # the environment wins, as for the value
    assert f"CH_LOG_LEVEL is set by {started_by}" in shown
    assert "CH_BACKOFF_MAX_S is set by daemon.env" in shown and "https_proxy is set by daemon.env" in shown
    (defaults,) = [s for s in shown if s.startswith("default: ")]
    assert "CH_NOTIFY_COMMAND" in defaults and "CH_BACKOFF_MAX_S" not in defaults
    assert not any("pw" in s or "true" in s for s in shown)  # names and sources, never values


def test_the_settings_chctl_passes_are_the_daemon_s_settings() -> None:
    from context_harness.client.daemon_env import DAEMON_SETTINGS
    from context_harness.daemon.settings import setting_names

    assert list(DAEMON_SETTINGS) == setting_names()


def test_a_relative_ch_home_means_what_it_meant_where_chctl_ran(user_env: UserEnv, stop_daemon: None) -> None:
    relative = os.path.relpath(user_env.ch_home, user_env.project)
    done = chctl(user_env, "status", autostart=True, extra_env={"CH_HOME": relative})
    assert done.returncode == 0, done.stderr
    assert daemon_environ(user_env)["CH_HOME"] == str(user_env.ch_home)
