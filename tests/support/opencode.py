"""The real opencode binary (npm opencode-ai, pinned in tests/peers), run offline in the test's user env."""

from __future__ import annotations

import json
import re
import subprocess
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


def run_opencode(
    env: UserEnv, *args: str, cwd: Path | None = None, timeout: float = 60
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
    text = done.stdout + done.stderr
    status: dict[str, str] = {}
    for match in re.finditer(r"[✓✗]\s+(\S+)\s+(\w+)", text):
        name, word = match.groups()
        status[name] = word
    return status


def mcp_auth(env: UserEnv, name: str, deadline_s: float = 60) -> Path:
    """`opencode mcp auth NAME` as a person does it, headless: opencode prints the authorization URL, the
    fake browser consents at oidc-provider, and the redirect goes to opencode's own callback listener.
    Returns the mcp-auth.json opencode wrote."""
    import asyncio
    import os
    import select
    import time
    import urllib.request

    from tests.peers.fake_browser import complete_consent

    proc = subprocess.Popen(
        [str(OPENCODE_BIN), "mcp", "auth", name],
        env={**env.vars(), **OFFLINE},
        cwd=env.project,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        output = b""
        deadline = time.monotonic() + deadline_s
        found = None
        while found is None:
            assert time.monotonic() < deadline, f"opencode printed no authorization URL:\n{output.decode()}"
            if select.select([proc.stdout], [], [], 0.2)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
            found = re.search(rb"(https?://\S+/auth\?\S+)", output)
        redirect = asyncio.run(complete_consent(found.group(1).decode()))
        with urllib.request.urlopen(redirect, timeout=10) as answer:  # opencode's callback on 127.0.0.1:19876
            assert answer.status == 200
        assert proc.wait(deadline_s) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return env.home / ".local/share/opencode/mcp-auth.json"
