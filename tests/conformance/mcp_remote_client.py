"""The conformance suite's client command for mcp-remote 0.15.1 (tests/peers), the stdio bridge people use
today, driven the same way as chctl (tests/conformance/chctl_client.py): `python mcp_remote_client.py URL`.

In a fresh HOME, `mcp-remote URL` runs as an agent's stdio server (with the scenario's pre-registered client,
if any, as `--static-oauth-client-info`); the authorization URL it prints is followed to its callback, as
a browser would; then the same MCP steps: initialize, tools/list, call each tool. Exit 0 when all worked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp.client.stdio import StdioServerParameters  # noqa: E402

from tests.conformance.browser import follow_login  # noqa: E402
from tests.conformance.driver import exercise, log  # noqa: E402

PEERS = Path(__file__).resolve().parents[1] / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
MCP_REMOTE = PEERS / "mcp-remote" / "dist" / "proxy.js"
LOGIN_URL = re.compile(r"^(https?://\S+)$")  # alone on the line after "Please authorize this client by visiting:"


def _follow_logins(stream: IO[str]) -> None:
    """Relay mcp-remote's stderr to ours; each authorization URL it prints is visited."""
    asked = False
    for line in stream:
        sys.stderr.write(f"mcp-remote: {line}")
        found = LOGIN_URL.search(line.strip()) if asked else None
        asked = "by visiting:" in line
        if found:
            try:
                log(f"login callback answered {follow_login(found.group(1), callback_wait_s=15)}")
            except OSError as error:
                log(f"login failed: {error}")


async def run(server_url: str, context: dict[str, object]) -> int:
    with tempfile.TemporaryDirectory(prefix="mrconf-") as home:
        args = [str(MCP_REMOTE), server_url]
        if isinstance(context.get("client_id"), str):
            client = {k: context[k] for k in ("client_id", "client_secret") if isinstance(context.get(k), str)}
            args += ["--static-oauth-client-info", json.dumps(client)]
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd) as errors_in, os.fdopen(write_fd, "w") as errors_out:
            reader = threading.Thread(target=_follow_logins, args=(errors_in,), daemon=True)
            reader.start()
            env = {**os.environ, "HOME": home, "MCP_REMOTE_CONFIG_DIR": str(Path(home) / ".mcp-auth")}
            server = StdioServerParameters(command=str(NODE), args=args, env=env, cwd=home)
            return await exercise(server, errlog=errors_out)


def main() -> int:
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    return asyncio.run(run(sys.argv[-1], context))


if __name__ == "__main__":
    sys.exit(main())
