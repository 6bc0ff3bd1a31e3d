"""README's install command is the one that gives the fast chctl, and the start-up benchmark measures it."""

from __future__ import annotations

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
