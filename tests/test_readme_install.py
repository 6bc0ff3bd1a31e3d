"""README's install command is the one that gives the fast chctl, and the start-up benchmark measures it."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def install_steps() -> list[list[str]]:
    sys.path.insert(0, str(BENCH))
    try:
        import chctl_startup
    finally:
        sys.path.remove(str(BENCH))
    return [shlex.split(step) for step in chctl_startup.readme_install_command().split("&&")]


def test_readme_install_upgrades_pip_before_installing_chctl() -> None:
    # pip 23 (Debian's venv) writes a console-script wrapper that imports `re`: 1.8x a bare python.
    steps = install_steps()
    upgrade = steps.index([".venv/bin/pip", "install", "--upgrade", "pip"])
    install = steps.index([".venv/bin/pip", "install", "."])
    assert upgrade < install


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Every `chctl ...` README shows: the lines of its sh blocks and the commands in its table."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            commands += [part.strip() for part in line.split("#")[0].split("&&")]
    commands += re.findall(r"`(chctl [^`$]*)`", text)
    return [c for c in commands if c.startswith("chctl ")]


def test_readme_starts_with_what_it_is_then_the_two_set_up_commands() -> None:
    text = README.read_text()
    first_screen = "\n".join(text.splitlines()[:30])
    assert "keeps every credential" in first_screen
    assert "python3 -m venv .venv && " in first_screen and "\n./scripts/test\n" in first_screen
    assert "source .venv/bin/activate" in first_screen  # how bare `chctl` gets on PATH
    assert len(text.splitlines()) < 120  # the details live in docs/guide.md
    quick_start = re.search(r"## Quick start\n\n```sh\n(.*?)```", text, re.S)
    assert quick_start is not None and len(quick_start.group(1).splitlines()) <= 5


def test_every_chctl_command_in_the_readme_parses() -> None:
    from context_harness.client.chctl import build_parser

    commands = readme_commands()
    assert len(commands) > 10
    for command in commands:
        words = [w for w in shlex.split(command)[1:] if w != "…"]
        if words[-1:] == ["COMMAND"] or "COMMAND" in words:
            continue  # `chctl COMMAND --help`: a placeholder
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            raise AssertionError(f"README shows `{command}`, which chctl does not accept") from exc
