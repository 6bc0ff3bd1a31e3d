"""A private, throw-away user environment: HOME, CH_HOME, XDG dirs, all under one temp dir."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


@dataclass
class UserEnv:
    root: Path
    home: Path
    ch_home: Path
    runtime: Path
    config_home: Path
    project: Path

    @property
    def socket(self) -> Path:
        return self.runtime / "context-harness" / "chd.sock"

    @property
    def global_config_dir(self) -> Path:
        return self.config_home / "opencode"

    def vars(self) -> dict[str, str]:
        # No proxy from the machine: the tests that want one say so (and only loopback answers here anyway).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CH_", "XDG_", "OPENCODE_", "DBUS_")) and not k.lower().endswith("_proxy")
        }
        env.update(
            HOME=str(self.home),
            CH_HOME=str(self.ch_home),
            XDG_RUNTIME_DIR=str(self.runtime),
            XDG_CONFIG_HOME=str(self.config_home),
            XDG_DATA_HOME=str(self.home / ".local/share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_STATE_HOME=str(self.home / ".local/state"),
            CH_LOG_LEVEL="debug",
            CH_LOG_FORMAT="json",
            # The peers issue 2-4 s tokens on purpose; the default spacing (10 s) is tested on its own.
            CH_MIN_REFRESH_SPACING_S="1",
            # Token files, as the tests reading them expect; tests/test_keychain*.py choose the keychain (and
            # auto) themselves, with a session bus and a Secret Service of their own.
            CH_SECRET_STORE="file",
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env


def make_user_env(root: Path) -> UserEnv:
    # Short root: Unix socket paths must stay under ~107 bytes.
    home = root / "h"
    env = UserEnv(
        root=root,
        home=home,
        ch_home=home / ".context-harness",
        runtime=root / "r",
        config_home=home / ".config",
        project=home / "proj",
    )
    for directory in (home, env.config_home, env.project):
        directory.mkdir(parents=True, exist_ok=True)
    env.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    (env.project / ".git").mkdir()  # a git root, as opencode's walk-up expects
    return env
