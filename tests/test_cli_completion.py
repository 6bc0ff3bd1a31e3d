"""`chctl completion bash|zsh|fish`: scripts the real shells load, completing commands, options, choices,
and server names asked of the daemon."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv


@pytest.fixture
def configured(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "mine", "--url", "http://127.0.0.1:9/mcp").returncode == 0


def script(user_env: UserEnv, shell: str) -> Path:
    done = chctl(user_env, "completion", shell)
    assert done.returncode == 0, done.stderr
    path = user_env.root / f"chctl.{shell}"
    path.write_text(done.stdout)
    return path


def run_shell(user_env: UserEnv, argv: list[str]) -> str:
    done = subprocess.run(
        argv, env=user_env.vars(), cwd=user_env.project, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_completes_commands_options_choices_and_server_names(configured: None, user_env: UserEnv) -> None:
    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        program = f"source {script(user_env, 'bash')}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _chctl\n"
        return run_shell(user_env, ["bash", "-c", program + 'printf "%s\\n" "${COMPREPLY[@]}"']).split()

    assert complete("chctl", "au") == ["auth"]
    assert complete("chctl", "add", "--api-k") == ["--api-key", "--api-key-env"]
    assert complete("chctl", "daemon", "st") == ["start", "stop", "status"]
    names = complete("chctl", "auth", "")
    assert "mine" in names and "linear" in names and "context7" in names  # configured and registry alike


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_and_server_names(configured: None, user_env: UserEnv) -> None:
    path = script(user_env, "fish")

    def complete(line: str) -> list[str]:
        out = run_shell(user_env, ["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"])
        return [row.split("\t")[0] for row in out.splitlines()]

    assert "auth" in complete("chctl au")
    assert {"mine", "linear"} <= set(complete("chctl auth "))
    assert "--no-browser" in complete("chctl auth --no")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_loads_the_script_after_compinit(configured: None, user_env: UserEnv) -> None:
    path = script(user_env, "zsh")
    program = f"autoload -U compinit && compinit -u -D && source {path} && print -r -- $_comps[chctl]"
    assert run_shell(user_env, ["zsh", "-f", "-c", program]).strip() == "_chctl"


def test_names_without_a_daemon_print_nothing_and_start_none(user_env: UserEnv) -> None:
    done = chctl(user_env, "completion", "names", autostart=True)
    assert done.returncode == 0 and done.stdout == ""
    assert not user_env.socket.exists()
