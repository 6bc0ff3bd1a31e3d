"""`chctl auth` end to end: the real oidc-provider, an MCP SDK resource server that introspects, the fake
browser driving consent, the real opencode, and an MCP SDK client calling a tool with the header we wrote."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent

from tests.peers.fake_browser import browser_command, complete_consent
from tests.peers.mcp_servers import McpOAuthServer
from tests.peers.oidc import OidcProvider
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.opencode import mcp_list


def browser_env(**extra: str) -> dict[str, str]:
    return {"BROWSER": browser_command(), **extra}


def stored(user_env: UserEnv, name: str = "srv") -> dict:
    return json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())


def header_of(user_env: UserEnv, name: str = "srv") -> str:
    config = json.loads((user_env.project / "opencode.json").read_text())
    return config["mcp"][name]["headers"]["Authorization"]


async def call_whoami(url: str, authorization: str) -> str:
    """An MCP SDK client calling a tool with exactly the header we wrote into opencode.json."""
    async with (
        create_mcp_http_client(headers={"Authorization": authorization}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


def assert_no_secret(text: str, user_env: UserEnv, name: str = "srv") -> None:
    tokens = stored(user_env, name).get("tokens", {})
    for secret in (tokens.get("access_token"), tokens.get("refresh_token")):
        if secret:
            assert secret not in text, "a token leaked"


@pytest.fixture
def added(daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer) -> McpOAuthServer:
    assert chctl(user_env, "init").returncode == 0
    done = chctl(user_env, "add", "srv", "--url", mcp_oauth_server.url)
    assert done.returncode == 0, done.stderr
    return mcp_oauth_server


def test_add_then_auth_writes_a_working_bearer_header(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    done = chctl(user_env, "auth", "srv", extra_env=browser_env())
    assert done.returncode == 0, done.stderr
    url_line = done.stdout.splitlines()[0]
    assert url_line.startswith(oidc_provider.issuer + "/auth?") and " " not in url_line
    assert "code_challenge_method=S256" in url_line and "resource=" in url_line

    header = header_of(user_env)
    assert header.startswith("Bearer ")
    token = header.removeprefix("Bearer ")
    assert asyncio.run(oidc_provider.is_active(token))
    config = json.loads((user_env.project / "opencode.json").read_text())
    assert config["mcp"]["srv"]["oauth"] is False
    assert asyncio.run(call_whoami(added.url, header)) == "alice"
    assert mcp_list(user_env) == {"srv": "connected"}

    saved = stored(user_env)
    assert saved["issuer"] == oidc_provider.issuer and saved["resource"]
    assert saved["tokens"]["refresh_token"] and saved["tokens"]["expires_at"] > saved["tokens"]["issued_at"]
    assert_no_secret(daemon.log() + done.stdout + done.stderr, user_env)

    status = chctl(user_env, "auth", "srv", "--status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["state"] == "active"


def test_auth_then_add_writes_the_stored_token_at_once(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    registry = {"servers": [{"name": "srv", "url": mcp_oauth_server.url, "auth_type": "oauth"}]}
    (user_env.ch_home / "registry.json").write_text(json.dumps(registry))
    daemon.proc.send_signal(1)  # SIGHUP: re-read the registry
    chctl(user_env, "init")
    assert _wait_registry(user_env)
    done = chctl(user_env, "auth", "srv", extra_env=browser_env())
    assert done.returncode == 0, done.stderr
    assert "chctl add srv" in done.stdout
    added = chctl(user_env, "add", "srv")
    assert added.returncode == 0, added.stderr
    assert header_of(user_env) == "Bearer " + stored(user_env)["tokens"]["access_token"]
    assert mcp_list(user_env) == {"srv": "connected"}


def _wait_registry(user_env: UserEnv) -> bool:
    from tests.support.daemon import wait_for

    def known() -> bool:
        listed = chctl(user_env, "registry", "--json")
        return any(s["name"] == "srv" for s in json.loads(listed.stdout)["servers"])

    return bool(wait_for(known, 10, interval_s=0.1, what="registry reload"))


def test_file_mode_keeps_the_token_out_of_the_config(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    chctl(user_env, "init")
    assert chctl(user_env, "add", "srv", "--url", mcp_oauth_server.url, "--secret-mode", "file").returncode == 0
    assert chctl(user_env, "auth", "srv", extra_env=browser_env()).returncode == 0
    token = stored(user_env)["tokens"]["access_token"]
    assert token not in (user_env.project / "opencode.json").read_text()
    assert header_of(user_env) == "Bearer {file:~/.context-harness/secrets/srv.token}"
    assert (user_env.ch_home / "secrets" / "srv.token").read_text() == token
    assert mcp_list(user_env) == {"srv": "connected"}


def test_logout_revokes_forgets_and_removes_the_header(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    assert chctl(user_env, "auth", "srv", extra_env=browser_env()).returncode == 0
    tokens = stored(user_env)["tokens"]
    done = chctl(user_env, "auth", "srv", "--logout")
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout
    assert not asyncio.run(oidc_provider.is_active(tokens["access_token"]))
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    config = json.loads((user_env.project / "opencode.json").read_text())
    assert "headers" not in config["mcp"]["srv"]  # the entry is left clean, no empty "headers": {}
    status = chctl(user_env, "auth", "srv", "--status", "--json")
    assert status.returncode == 1
    [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    assert row["state"] == json.loads(status.stdout)["state"] == "pending_auth"  # both say the same
    assert "chctl auth srv" in chctl(user_env, "auth", "srv", "--status").stderr


def test_user_denies_consent(daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer) -> None:
    done = chctl(user_env, "auth", "srv", extra_env=browser_env(FAKE_BROWSER_DENY="1"))
    assert done.returncode != 0
    assert "error[ACCESS_DENIED]" in done.stderr
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()


def test_flow_timeout(daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer) -> None:
    done = chctl(user_env, "auth", "srv", "--timeout", "2", extra_env=browser_env(FAKE_BROWSER_SKIP_CALLBACK="1"))
    assert done.returncode != 0
    assert "error[TIMEOUT]" in done.stderr
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()


def test_busy_fixed_port_is_a_clear_error(daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = chctl(user_env, "auth", "srv", "--port", str(port), extra_env=browser_env())
    assert done.returncode != 0
    assert f"port {port}" in done.stderr and "in use" in done.stderr


def test_fixed_port_is_used_for_the_redirect(daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = chctl(user_env, "auth", "srv", "--port", str(port), extra_env=browser_env())
    assert done.returncode == 0, done.stderr
    assert f"redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback" in done.stdout.splitlines()[0]


def test_headless_login_accepts_a_pasted_redirect_url(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "context_harness.client.chctl", "auth", "srv", "--no-browser"],
        env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
        cwd=user_env.project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = proc.stdout.readline().strip()
        redirect = asyncio.run(complete_consent(url))  # the person's browser on another machine
        proc.stdin.write(redirect + "\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "logged in to srv" in out
    assert header_of(user_env).startswith("Bearer ")


def test_doctor_flags_a_server_that_wants_a_login(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer
) -> None:
    done = chctl(user_env, "doctor")
    assert "srv: not logged in yet" in done.stdout and "chctl auth srv" in done.stdout  # `add` asked it
    assert "needs no credential" not in done.stdout
    assert chctl(user_env, "auth", "srv", extra_env=browser_env()).returncode == 0
    assert "srv: not logged in yet" not in chctl(user_env, "doctor").stdout


def test_auth_for_an_unknown_server_is_not_found(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "auth", "nosuchserver")
    assert done.returncode != 0 and "error[NOT_FOUND]" in done.stderr


def test_refresh_now_rotates_and_rewrites_the_header(
    daemon: DaemonProcess, user_env: UserEnv, added: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    assert chctl(user_env, "auth", "srv", extra_env=browser_env()).returncode == 0
    before = stored(user_env)["tokens"]
    done = chctl(user_env, "refresh", "srv")
    assert done.returncode == 0, done.stderr
    after = stored(user_env)["tokens"]
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert header_of(user_env) == "Bearer " + after["access_token"]
    assert not asyncio.run(oidc_provider.introspect(before["refresh_token"]))["active"]
    assert asyncio.run(oidc_provider.is_active(after["access_token"]))


def test_refresh_of_an_unknown_or_api_key_server_is_a_clear_error(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert "error[NOT_FOUND]" in chctl(user_env, "refresh", "nosuch").stderr
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real")
    assert "error[INVALID_PARAMS]" in chctl(user_env, "refresh", "context7").stderr
    row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert row["state"] == "api_key"
