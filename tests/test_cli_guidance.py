"""chctl guides a newcomer: help without arguments, --version, help on every argument, examples."""

from __future__ import annotations

import argparse
import subprocess
import sys

from context_harness import __version__
from context_harness.client import chctl as chctl_module
from tests.support.env import UserEnv


def run_chctl(user_env: UserEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """chctl without a daemon (none of these commands needs one)."""
    return subprocess.run(
        [sys.executable, "-m", "context_harness.client.chctl", *args],
        env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def all_parsers(parser: argparse.ArgumentParser, path: str = "chctl") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += all_parsers(sub, f"{path} {name}")
    return found


def test_chctl_alone_prints_the_help_and_exits_0(user_env: UserEnv) -> None:
    done = run_chctl(user_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: chctl")
    assert "examples:" in done.stdout and "required" not in done.stderr


def test_version(user_env: UserEnv) -> None:
    done = run_chctl(user_env, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"chctl {__version__}"


def test_every_argument_and_command_has_help_text() -> None:
    missing = []
    for path, parser in all_parsers(chctl_module.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{path} {name}" for name in action.choices if name not in helped]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_and_add_help_end_with_examples_and_point_to_the_registry(user_env: UserEnv) -> None:
    for args in (["--help"], ["add", "--help"]):
        done = run_chctl(user_env, *args)
        assert done.returncode == 0
        tail = done.stdout[done.stdout.index("examples:") :]
        assert tail.count("\n  chctl ") >= 3
        assert "`chctl registry`" in tail
