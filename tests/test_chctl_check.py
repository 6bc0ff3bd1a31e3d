"""`chctl check`: a live probe of each server through the daemon, on the path an agent's traffic takes — real
MCP SDK servers (API key and OAuth at oidc-provider), an unreachable port, a name that does not resolve, a
wrong key, a rejected (expired) token that the probe renews, and a server with no login. The proxy cases are
in test_company_network.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from context_harness.stores.token_store import TokenStore
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.test_bridge import add_bridged, free_port, log_in


def check(user_env: UserEnv, *names: str) -> tuple[int, list[dict[str, Any]]]:
    done = chctl(user_env, "check", *names, "--json", "--timeout", "30")
    assert done.returncode in (0, 1, 2), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_mcp_sdk_servers_answer_with_their_name_protocol_and_tools(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    mcp_oauth_server: McpOAuthServer,
) -> None:
    keyed = mcp_api_key_server()
    add_bridged(user_env, "keyed", "--url", keyed.url, "--key-header", keyed.header, "-k", keyed.key)
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)
    log_in(user_env, "srv")

    code, servers = check(user_env)
    assert code == 0
    assert [s["name"] for s in servers] == ["keyed", "srv"]
    for server in servers:
        assert (server["outcome"], server["level"], server["proxy"]) == ("ok", "ok", None)
        assert server["server_name"] and server["protocol_version"] and server["tools"] >= 5
        assert server["elapsed_ms"] >= 0

    text = chctl(user_env, "check", "keyed")
    assert text.returncode == 0
    assert text.stdout.startswith(f"✓ keyed: ok · {servers[0]['server_name']}")
    assert f"MCP {servers[0]['protocol_version']}" in text.stdout and "direct" in text.stdout
    assert keyed.key not in text.stdout + json.dumps(servers)


def test_an_unreachable_port_and_an_unknown_name_fail_with_what_to_check(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    add_bridged(user_env, "gone", "--url", f"http://127.0.0.1:{free_port()}/mcp", "-k", "some-key")
    add_bridged(user_env, "nowhere", "--url", "https://mcp.nowhere.invalid/mcp", "-k", "some-key")
    code, servers = check(user_env)
    assert code == 2
    gone, nowhere = servers
    assert (gone["outcome"], gone["level"]) == ("connect", "failed")
    assert "cannot connect to 127.0.0.1:" in gone["message"] and gone["next_action"]
    assert (nowhere["outcome"], nowhere["level"]) == ("dns", "failed")
    assert "cannot resolve mcp.nowhere.invalid" in nowhere["message"]

    text = chctl(user_env, "check", "gone")
    assert text.returncode == 2 and text.stdout.startswith("✗ gone: cannot connect — ")
    assert "\n  hint: " in text.stdout


def test_a_wrong_key_needs_attention_and_says_how_to_set_another(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    keyed = mcp_api_key_server()
    add_bridged(user_env, "keyed", "--url", keyed.url, "--key-header", keyed.header, "-k", "not-the-key")
    code, (server,) = check(user_env, "keyed")
    assert code == 1
    assert (server["outcome"], server["level"]) == ("unauthorized", "attention")
    assert server["message"].startswith("401") and "refused the API key" in server["message"]
    assert "chctl add keyed -k KEY" in server["next_action"]  # it keeps the key header and the bridge


def test_a_rejected_token_is_refreshed_as_an_agent_s_would_be_and_no_login_says_chctl_auth(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)
    log_in(user_env, "srv")
    store = TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets")
    credential = store.load("srv")
    assert credential is not None and credential.tokens is not None
    expired = credential.model_copy(
        update={"tokens": credential.tokens.model_copy(update={"access_token": "expired-long-ago"})}
    )
    store.save(expired)

    code, (server,) = check(user_env, "srv")
    assert (code, server["outcome"]) == (0, "ok")
    renewed = store.load("srv")
    assert renewed is not None and renewed.secret not in (None, "expired-long-ago")

    assert chctl(user_env, "auth", "srv", "--logout").returncode == 0
    code, (server,) = check(user_env, "srv")
    assert (code, server["outcome"]) == (1, "unauthorized")
    assert "chctl auth srv" in server["next_action"]


STDIO_APP = Path(__file__).resolve().parent / "peers" / "mcp_stdio_app.py"


def test_a_local_entry_is_started_from_its_command_and_environment_and_a_hung_one_meets_the_deadline(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    assert chctl(user_env, "init").returncode == 0
    command = f"{sys.executable} {STDIO_APP}"
    added = chctl(user_env, "add", "local", "--command", command, "--env", "STDIO_PEER_GREETING=hello")
    assert added.returncode == 0, added.stderr
    hung = chctl(user_env, "add", "hung", "--command", command, "--env", "STDIO_PEER_HANG=1")
    assert hung.returncode == 0, hung.stderr

    done = chctl(user_env, "check", "local", "hung", "--json", "--timeout", "5")
    local, stuck = json.loads(done.stdout)
    assert done.returncode == 2, done.stdout
    assert (local["outcome"], local["server_name"], local["tools"], local["proxy"]) == (  # {local}
        "ok",
        "stdio-peer-hello",
        2,
        None,
    )
    assert (stuck["outcome"], stuck["level"]) == ("timeout", "failed") and "did not answer within 5 s" in stuck[
        "message"
    ]
    assert 5000 <= stuck["elapsed_ms"] < 15000


def test_a_token_without_the_scope_the_server_wants_is_403_with_the_scope_to_log_in_with(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)
    done = chctl(user_env, "auth", "srv", "--scope", "mcp:read", extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr
    code, (server,) = check(user_env, "srv")
    assert (code, server["outcome"], server["level"]) == (1, "forbidden", "attention")
    assert server["message"].startswith("403 (insufficient_scope): ")
    assert "`chctl auth srv --scope SCOPE`" in server["next_action"]
