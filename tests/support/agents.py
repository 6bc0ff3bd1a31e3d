"""The real Claude Code, Gemini CLI and Codex binaries (npm, pinned in tests/peers), run offline in the test's
user env: its HOME is a temp dir, and the tests run in a loopback-only network namespace."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.env import UserEnv

BIN = Path(__file__).resolve().parents[1] / "peers" / "node_modules" / ".bin"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

OFFLINE = {
    "claude-code": {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"},
    "gemini": {"GEMINI_CLI_TRUST_WORKSPACE": "true", "GEMINI_CLI_NO_RELAUNCH": "true"},
    "codex": {},
}
EXECUTABLE = {"claude-code": "claude", "gemini": "gemini", "codex": "codex"}


def run_agent(
    env: UserEnv,
    client: str,
    *args: str,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / EXECUTABLE[client]), *args],
        env={**env.vars(), **OFFLINE[client], **(extra_env or {})},
        cwd=cwd or env.project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    done.stdout = _ANSI.sub("", done.stdout)
    done.stderr = _ANSI.sub("", done.stderr)
    return done
