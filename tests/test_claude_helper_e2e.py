"""Claude Code's `headersHelper` running `chctl token NAME --json` (`chctl add NAME --client claude-code --mode
helper`): the real Claude Code (pinned in tests/peers, offline) against oidc-provider and an MCP SDK server."""

from __future__ import annotations

import asyncio
import json
import shlex

import pytest

from context_harness.config.format import get_format
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer
from tests.support.agents import run_agent
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.test_clients_e2e import entry_in, statuses, stored_tokens, ten_second_tokens, user_file  # noqa: F401 (a fixture)
from tests.test_recorded_url import Recorder


def test_a_helper_mode_entry_connects_with_a_fresh_token_after_a_refresh_and_never_holds_one(
    daemon: DaemonProcess, user_env: UserEnv, request: pytest.FixtureRequest
) -> None:
    provider, server = request.getfixturevalue("ten_second_tokens")  # test_clients_e2e's
    claude_json = user_file(user_env, "claude-code")
    done = chctl(user_env, "add", "srv", "--url", server.url, "--client", "claude-code", "--mode", "helper")
    assert done.returncode == 0, done.stderr
    assert "chctl token" in done.stdout
    entry = entry_in(claude_json, "claude-code", "srv")
    command = shlex.split(entry["headersHelper"])
    assert command[0].startswith("/") and command[1:] == ["token", "srv", "--json"]
    assert entry == {"type": "http", "url": server.url, "headersHelper": entry["headersHelper"]}
    assert statuses(user_env, "claude-code") == {"srv": "failed"}  # no login yet: the helper exits 1

    assert chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()}).returncode == 0
    first = stored_tokens(user_env, "srv")["access_token"]
    assert statuses(user_env, "claude-code") == {"srv": "connected"}
    assert first not in claude_json.read_text()

    # The daemon refreshes on its own, and the first token dies at the authorization server (oidc-provider
    # revokes a whole grant when one of its tokens is revoked, so here it dies of age): a new Claude session
    # still connects, with the token `chctl token` hands it then.
    wait_for(lambda: not asyncio.run(provider.is_active(first)), 30, interval_s=0.5, what="the first token to die")
    assert stored_tokens(user_env, "srv")["access_token"] != first
    assert statuses(user_env, "claude-code") == {"srv": "connected"}
    text = claude_json.read_text()
    assert first not in text and stored_tokens(user_env, "srv")["access_token"] not in text
    assert entry_in(claude_json, "claude-code", "srv") == entry  # the publisher wrote no header into it
    row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert row["mode"] == "helper" and row["token_reads"] >= 2
    events = daemon.log_events()
    assert any(e.get("event") == "token_refreshed" for e in events)
    assert not any(e.get("event") == "config_write_failed" for e in events)


def test_an_api_key_server_in_helper_mode_sends_its_own_header(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-Api-Key")
    args = ("--url", server.url, "--key-header", server.header, "-k", server.key)
    assert chctl(user_env, "add", "keyed", *args, "--client", "claude-code", "--mode", "helper").returncode == 0
    assert statuses(user_env, "claude-code") == {"keyed": "connected"}
    assert server.key not in user_file(user_env, "claude-code").read_text()


def test_helper_mode_is_refused_for_clients_without_a_headers_helper(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    chctl(user_env, "init")
    for client in ("opencode", "codex", "gemini", "cursor", "vscode"):
        done = chctl(user_env, "add", "srv", "--url", mcp_oauth_server.url, "--client", client, "--mode", "helper")
        assert done.returncode != 0 and "error[INVALID_PARAMS]" in done.stderr
        assert "Claude Code only" in done.stderr and f"--client {client}" in done.stderr
    # With claude-code in the same command: nothing is written to any client.
    done = chctl(
        user_env, "add", "srv", "--url", mcp_oauth_server.url, "--client", "claude-code", "--client", "codex",
        "--mode", "helper",
    )  # fmt: skip
    assert done.returncode != 0
    assert not user_file(user_env, "claude-code").exists() and not user_file(user_env, "codex").exists()
    assert "srv" not in get_format("opencode").entries(json.loads((user_env.project / "opencode.json").read_text()))


async def test_a_helper_entry_whose_url_was_swapped_gets_no_key(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    """The attack of a pulled config, in helper mode: Claude Code tells the helper which URL it connects to
    (`CLAUDE_CODE_MCP_SERVER_URL`), and `chctl token` hands out nothing for a URL chctl did not record."""
    server = mcp_api_key_server(header="X-Api-Key")
    args = ("--url", server.url, "--key-header", server.header, "-k", server.key)
    added = await asyncio.to_thread(
        chctl, user_env, "add", "keyed", *args, "--client", "claude-code", "--mode", "helper"
    )
    assert added.returncode == 0
    claude_json = user_file(user_env, "claude-code")
    async with Recorder() as attacker:
        config = json.loads(claude_json.read_text())
        config["mcpServers"]["keyed"]["url"] = attacker.url
        claude_json.write_text(json.dumps(config))
        listed = await asyncio.to_thread(run_agent, user_env, "claude-code", "mcp", "list")
        text = listed.stdout + listed.stderr
        assert "keyed:" in text and "Failed to connect" in text and "Connected" not in text.replace("to connect", "")
        assert attacker.requests > 0  # Claude did go there: without the check, the helper's key would have too
        assert not any(server.key in value for value in attacker.header_values)

    asked = await asyncio.to_thread(
        chctl, user_env, "token", "keyed", "--json", extra_env={"CLAUDE_CODE_MCP_SERVER_URL": attacker.url}
    )
    assert asked.returncode != 0 and asked.stdout == ""
    assert "error[INVALID_PARAMS]" in asked.stderr and "chctl add keyed" in asked.stderr
    assert server.key not in asked.stderr
    right = await asyncio.to_thread(
        chctl, user_env, "token", "keyed", "--json", extra_env={"CLAUDE_CODE_MCP_SERVER_URL": server.url}
    )
    assert right.returncode == 0 and json.loads(right.stdout) == {"X-Api-Key": server.key}
