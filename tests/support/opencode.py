"""The real opencode binary (npm opencode-ai, pinned in tests/peers), run offline in the test's user env."""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.env import UserEnv

PEERS = Path(__file__).resolve().parents[1] / "peers"
OPENCODE_BIN = PEERS / "node_modules" / "opencode-linux-x64" / "bin" / "opencode"
OFFLINE = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# opencode is a 177 MB bun binary: `mcp list` takes 2 s alone, 12 s at a load of 8 on two cores (most of it
# before its first log line; no network: nothing is installed), and once more than 60 s. A server it cannot
# reach does not hold it: it lists that server as failed after a timeout of its own.
OPENCODE_DEADLINE_S = 240.0
CALLBACK_LOCK = Path(tempfile.gettempdir()) / "context-harness-tests-opencode-callback.lock"


def run_opencode(
    env: UserEnv, *args: str, cwd: Path | None = None, timeout: float = OPENCODE_DEADLINE_S
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(OPENCODE_BIN), *args],
        env={**env.vars(), **OFFLINE},
        cwd=cwd or env.project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    done.stdout = _ANSI.sub("", done.stdout)
    done.stderr = _ANSI.sub("", done.stderr)
    return done


def debug_config(env: UserEnv, cwd: Path | None = None) -> dict[str, Any]:
    done = run_opencode(env, "debug", "config", cwd=cwd)
    assert done.returncode == 0, f"opencode debug config failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def mcp_list(env: UserEnv, cwd: Path | None = None) -> dict[str, str]:
    """`opencode mcp list` as {server: "connected" | "failed" | ...}."""
    done = run_opencode(env, "mcp", "list", cwd=cwd)
    return parse_mcp_list(done.stdout + done.stderr)


def parse_mcp_list(text: str) -> dict[str, str]:
    text = _ANSI.sub("", text)
    status: dict[str, str] = {}
    for match in re.finditer(r"[✓✗]\s+(\S+)\s+(\w+)", text):
        name, word = match.groups()
        status[name] = word
    return status


def mcp_auth(env: UserEnv, name: str) -> Path:
    """`opencode mcp auth NAME`, headless (its callback is 127.0.0.1:19876). Returns the mcp-auth.json it wrote."""
    from tests.support.headless_login import log_in_headless

    argv = [str(OPENCODE_BIN), "mcp", "auth", name]
    pattern = rb"(https?://\S+/auth\?\S+)"
    # Its callback port is fixed: a second login at once on this machine (another test run) would take it, and
    # one of the two browsers' redirects would find nobody listening. One at a time, across processes.
    with CALLBACK_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log_in_headless(argv, {**env.vars(), **OFFLINE}, env.project, pattern, deadline_s=OPENCODE_DEADLINE_S)
    return env.home / ".local/share/opencode/mcp-auth.json"
