"""Against a real FastMCP server and its own OAuth provider (tests/peers/fastmcp_app.py): a login, a bridged call,
and `chctl auth NAME --logout`, after which both tokens are inactive at FastMCP. Its revocation endpoint (the MCP
Python SDK's) wants a `client_secret` field even from the public client its registration created."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client
from mcp_types import TextContent

from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.bridge import bridge_params
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

APP = Path(__file__).resolve().parent / "peers" / "fastmcp_app.py"
BROWSER = Path(__file__).resolve().parent / "conformance" / "browser.py"


@pytest.fixture(scope="module")
def fastmcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    peer = start_peer([sys.executable, str(APP)], log_path=tmp_path_factory.mktemp("fastmcp") / "fastmcp.log")
    yield peer
    peer.stop()


def post(
    url: str, *, form: dict[str, str] | None = None, json_body: Any = None, bearer: str | None = None
) -> tuple[int, str | None]:
    """POST: the status, and the OAuth `error` of a refusal (a success's body is not read: it may hold tokens)."""
    headers = {"Accept": "application/json, text/event-stream"}
    data = urllib.parse.urlencode(form).encode() if form is not None else json.dumps(json_body).encode()
    headers["Content-Type"] = "application/x-www-form-urlencoded" if form is not None else "application/json"
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as answer:  # noqa: S310
            return int(answer.status), None
    except urllib.error.HTTPError as refused:
        body = refused.read()
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        return refused.code, error if isinstance(error, str) else None


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


async def echo_through_bridge(user_env: UserEnv) -> str:
    params = bridge_params(user_env, "fm")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await asyncio.wait_for(session.call_tool("echo", {"text": "hi"}), 30)
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


def test_logout_leaves_both_fastmcp_tokens_inactive(
    daemon: DaemonProcess, user_env: UserEnv, fastmcp_server: PeerProcess
) -> None:
    url = str(fastmcp_server.ready["url"])
    base = url.removesuffix("/mcp")
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "fm", "--url", url, "--bridge").returncode == 0
    login = chctl(user_env, "auth", "fm", "--timeout", "20", extra_env={"BROWSER": f"{sys.executable} {BROWSER} %s"})
    assert login.returncode == 0, login.stderr
    assert asyncio.run(echo_through_bridge(user_env)) == "hi"
    stored = json.loads((user_env.ch_home / "tokens" / "fm.json").read_text())
    access, refresh, client_id = (
        stored["tokens"]["access_token"],
        stored["tokens"]["refresh_token"],
        stored["client_id"],
    )
    assert post(url, json_body=INITIALIZE, bearer=access)[0] == 200  # live before the logout

    logout = chctl(user_env, "auth", "fm", "--logout")
    assert logout.returncode == 0, logout.stderr
    assert "revoked at the server" in logout.stdout and "NOT revoked" not in logout.stdout

    assert post(url, json_body=INITIALIZE, bearer=access) == (401, "invalid_token")
    refreshed = post(
        base + "/token", form={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    )
    assert refreshed[1] == "invalid_grant", refreshed  # the refresh token is gone too
    registered = [e for e in daemon.log_events() if e.get("event") == "client_registered"]
    assert [e["auth_method"] for e in registered] == [stored["token_endpoint_auth_method"]]  # what FastMCP said
