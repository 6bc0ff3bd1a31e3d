"""The commands an agent's config entry runs to reach us: `chctl bridge NAME`, `chctl token NAME --json`."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def chctl_command(*args: str) -> list[str]:
    """The command an agent runs to reach us: this installation's `chctl`, by absolute path, so it works
    whatever the agent's PATH is. Without a `chctl` script beside our interpreter, the interpreter runs the
    module (with -P: the agent's working directory must not shadow our modules)."""
    chctl = Path(sys.executable).parent / "chctl"
    if chctl.is_file() and os.access(chctl, os.X_OK):
        return [str(chctl), *args]
    return [sys.executable, "-P", "-m", "context_harness.client.chctl", *args]


def bridge_command(name: str) -> list[str]:
    """What a bridged entry runs."""
    return chctl_command("bridge", name)


def helper_command(name: str) -> str:
    """What a headers-helper entry runs, as one shell command line (Claude Code runs it through a shell)."""
    return shlex.join(chctl_command("token", name, "--json"))
