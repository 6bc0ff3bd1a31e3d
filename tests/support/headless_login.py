"""Another tool's own OAuth login, driven headless: it prints the authorization URL (there is no browser to
open), the fake browser consents at oidc-provider, and the redirect is fetched from the tool's own callback
listener, as a person's browser would. The tool then finishes by itself."""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.peers.fake_browser import complete_consent


def log_in_headless(argv: list[str], env: dict[str, str], cwd: Path, url_pattern: bytes, deadline_s: float = 60) -> str:
    """Run `argv` until it exits 0; `url_pattern`'s first group is the URL it prints for the login. Returns
    everything it printed."""
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    try:
        output = b""
        deadline = time.monotonic() + deadline_s
        found = None
        while found is None:
            assert time.monotonic() < deadline, f"{argv[0]} printed no authorization URL:\n{output.decode()}"
            if select.select([proc.stdout], [], [], 0.2)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
            found = re.search(url_pattern, output)
        redirect = asyncio.run(complete_consent(found.group(1).decode()))
        with urllib.request.urlopen(redirect, timeout=10) as answer:  # the tool's own callback listener
            assert answer.status == 200
        rest, _ = proc.communicate(timeout=deadline_s)
        assert proc.returncode == 0, (output + rest).decode()
        return (output + rest).decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
