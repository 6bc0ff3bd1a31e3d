"""`chctl doctor`: what it checks and how it says so."""

from __future__ import annotations

import json
import subprocess

from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv


def checks(user_env: UserEnv) -> tuple[int, list[dict[str, str]]]:
    done = chctl(user_env, "doctor", "--json")
    return done.returncode, json.loads(done.stdout)


def test_a_healthy_setup_passes(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real", "--secret-mode", "file")
    code, found = checks(user_env)
    assert code == 0
    assert all(c["level"] == "ok" for c in found), found
    assert any("daemon reachable" in c["message"] for c in found)


def test_an_inline_secret_in_a_git_tracked_config_is_flagged(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real")
    subprocess.run(["git", "init", "-q", str(user_env.project)], check=True)
    subprocess.run(["git", "-C", str(user_env.project), "add", "opencode.json"], check=True)
    code, found = checks(user_env)
    [warning] = [c for c in found if c["name"] == "inline_secret_in_git"]
    assert "context7" in warning["message"] and "--secret-mode file" in warning["hint"]
    assert "ctx7-key-not-real" not in json.dumps(found)


def test_loose_permissions_a_broken_config_and_a_bad_entry_are_errors(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real")
    (user_env.ch_home / "tokens" / "context7.json").chmod(0o644)
    code, found = checks(user_env)
    assert code == 2
    assert any(c["name"] == "secret_file_mode" and c["level"] == "error" for c in found)

    config = user_env.project / "opencode.json"
    text = config.read_text().replace('"type": "remote"', '"type": "remote", "args": ["x"]')
    config.write_text(text)
    _, found = checks(user_env)
    assert any(c["name"] == "entry_schema" and "args" in c["message"] for c in found)

    config.write_text("{ broken")
    _, found = checks(user_env)
    assert any(c["name"] == "config_parses" and c["level"] == "error" for c in found)


def test_without_a_daemon_doctor_says_so(user_env: UserEnv) -> None:
    done = chctl(user_env, "doctor")
    assert done.returncode == 2
    assert "daemon" in done.stdout and "chctl daemon start" in done.stdout


def test_the_first_inline_secret_makes_a_0644_config_private_and_file_mode_leaves_it_alone(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    config = user_env.project / "opencode.json"
    chctl(user_env, "init")
    assert config.stat().st_mode & 0o777 == 0o644
    chctl(user_env, "add", "docs", "--url", "https://mcp.example/mcp", "--header", "X-Team=blue")
    assert config.stat().st_mode & 0o777 == 0o644  # no secret in it yet
    done = chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real")
    assert done.returncode == 0, done.stderr
    assert "ctx7-key-not-real" in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600

    other = user_env.home / "other"
    other.mkdir()
    chctl(user_env, "init", cwd=other)
    chctl(user_env, "add", "context7", "--secret-mode", "file", cwd=other)
    assert (other / "opencode.json").stat().st_mode & 0o777 == 0o644  # only a {file:} reference in it


def test_a_readable_config_with_inline_secrets_is_reported(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real")
    config = user_env.project / "opencode.json"
    config.chmod(0o644)  # a person (or another tool) opened it up again
    _, found = checks(user_env)
    [warning] = [c for c in found if c["name"] == "inline_secret_readable"]
    assert str(config) in warning["message"] and "644" in warning["message"] and "context7" in warning["message"]
    assert "chmod 600" in warning["hint"] and "--secret-mode file" in warning["hint"]
    assert "ctx7-key-not-real" not in json.dumps(found)


def test_without_a_daemon_doctor_says_so_with_a_hint_and_exits_2(user_env: UserEnv) -> None:
    done = chctl(user_env, "doctor")
    assert done.returncode == 2
    first, hint = done.stdout.splitlines()
    assert first.startswith("✗ daemon reachable: the daemon is not answering on ")
    assert hint == "  hint: start it with `chctl daemon start` (or `context-harnessd` in a terminal)"
