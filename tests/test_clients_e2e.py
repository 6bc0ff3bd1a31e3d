"""One token keeper for every agent: the real daemon and chctl writing each client's file, and the real Claude
Code, Gemini CLI and Codex binaries (npm, pinned in tests/peers) connecting through it — offline, HOME a temp
dir, loopback only — to oidc-provider + an MCP SDK resource server and to an API-key server, in both modes.

Claude and Gemini report each server's connection (`mcp list`); Codex's `mcp list` does not connect, so
`codex exec` runs a real turn against a fake Responses API on 127.0.0.1 whose model calls `whoami` on every
server, each marked `required = true` (a server that fails to start fails the run)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from context_harness.config import toml_edit
from context_harness.config.format import get_format
from tests.peers.fake_browser import browser_command
from tests.peers.fake_models import FakeGeminiApi, FakeMessagesApi, FakeResponsesApi
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.agents import run_agent
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.test_bridge import call, open_for_writing, three_second_tokens  # noqa: F401 (a fixture)

AGENTS = ("claude-code", "gemini", "codex")
FakeModel = FakeResponsesApi | FakeMessagesApi | FakeGeminiApi
OTHER_CLIENTS = ("claude-code", "codex", "gemini", "cursor", "vscode")


@pytest.fixture(scope="module")
def responses_api() -> Iterator[FakeResponsesApi]:
    api = FakeResponsesApi(tool="whoami").start()
    yield api
    api.stop()


def use_fake_model(user_env: UserEnv, client: str, api: FakeModel) -> None:
    """Codex's model provider (the fake Responses API) or Gemini's auth type (an API key for the fake Gemini
    API), written before any server is added: chctl keeps these lines."""
    if client == "gemini":
        settings = user_file(user_env, "gemini")
        settings.parent.mkdir(exist_ok=True)
        # Gemini stops a session that repeats one tool call as a loop; the long session does so on purpose.
        settings.write_text(
            '{\n  "security": {"auth": {"selectedType": "gemini-api-key"}},\n'
            '  "model": {"disableLoopDetection": true}\n}\n'
        )
    if client != "codex":
        return
    config = user_file(user_env, "codex")
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        '# the fake model\nmodel = "fake"\nmodel_provider = "fake"\n\n[model_providers.fake]\nname = "fake"\n'
        f'base_url = "{api.base_url}"\nwire_api = "responses"\n'
    )


def add(user_env: UserEnv, name: str, *args: str) -> None:
    done = chctl(user_env, "add", name, *args)
    assert done.returncode == 0, done.stderr
    if "codex" in args:  # once, before the daemon starts rewriting headers: a run fails if this server fails
        config = user_file(user_env, "codex")
        for key, value in (("required", True), ("default_tools_approval_mode", "approve")):
            config.write_text(toml_edit.set_member(config.read_text(), ("mcp_servers", name, key), value))


def add_key(user_env: UserEnv, name: str, server: McpApiKeyServer, *args: str) -> None:
    add(user_env, name, "--url", server.url, "--key-header", server.header, "-k", server.key, *args)


def log_in(user_env: UserEnv, name: str) -> None:
    done = chctl(user_env, "auth", name, extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr


def stored_tokens(user_env: UserEnv, name: str) -> dict[str, Any]:
    tokens: dict[str, Any] = json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())["tokens"]
    return tokens


def user_file(user_env: UserEnv, client: str) -> Path:
    return {
        "claude-code": user_env.home / ".claude.json",
        "codex": user_env.home / ".codex" / "config.toml",
        "gemini": user_env.home / ".gemini" / "settings.json",
        "cursor": user_env.home / ".cursor" / "mcp.json",
        "vscode": user_env.config_home / "Code" / "User" / "mcp.json",
    }[client]


def entry_in(path: Path, client: str, name: str) -> dict[str, Any]:
    fmt = get_format(client)
    found: dict[str, Any] = fmt.entries(fmt.syntax.parse(path.read_text()))[name]
    return found


def codex_statuses(user_env: UserEnv) -> dict[str, str]:
    """One `codex exec` turn calling `whoami` on every server: {server: "connected" | "failed"}."""
    names = list(get_format("codex").entries(toml_edit.parse_toml(user_file(user_env, "codex").read_text())))
    done = run_agent(
        user_env,
        "codex",
        *("exec", "--json", "--skip-git-repo-check", "-c", "analytics.enabled=false", "--disable", "plugins"),
        "call whoami on every server",
    )
    if done.returncode != 0:  # `required MCP servers failed to initialize: NAME: ...`
        failed = re.search(r"required MCP servers failed to initialize: (.*)", done.stderr)
        assert failed, done.stderr[-2000:]
        return {name: "failed" if f"{name}:" in failed.group(1) else "connected" for name in names}
    calls = [json.loads(line)["item"] for line in done.stdout.splitlines() if '"mcp_tool_call"' in line]
    answered = {c["server"] for c in calls if c["status"] == "completed" and c["error"] is None and c["result"]}
    return {name: "connected" if name in answered else "failed" for name in names}


def statuses(user_env: UserEnv, client: str, cwd: Path | None = None) -> dict[str, str]:
    """`claude mcp list` / `gemini mcp list` as {server: "connected" | "failed"}: both exit 0 either way."""
    if client == "codex":
        return codex_statuses(user_env)
    done = run_agent(user_env, client, "mcp", "list", cwd=cwd)
    text = done.stdout + done.stderr
    found: dict[str, str] = {}
    for line in text.splitlines():
        # claude: `name: URL (HTTP) - ✔ Connected` (or `✘ Failed to connect`, `! Needs authentication`);
        # gemini: `✓ name: URL (http) - Connected` (or `✗ ... - Disconnected`).
        match = re.match(r"^\s*(?:[✓✗]\s+)?([\w.-]+): .* - \W*(\w[\w ]*?)\s*$", line)
        if match:
            found[match.group(1)] = "connected" if match.group(2) == "Connected" else "failed"
    assert found, f"no servers in the output of {client} mcp list:\n{text}"
    return found


# --- both modes, both kinds of server, each real client ---------------------------------------------------


@pytest.mark.parametrize("client", AGENTS)
def test_the_client_connects_in_both_modes_to_oauth_and_api_key_servers(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    mcp_oauth_server: McpOAuthServer,
    responses_api: FakeResponsesApi,
    client: str,
) -> None:
    use_fake_model(user_env, client, responses_api)
    server = mcp_api_key_server()
    add_key(user_env, "key-bridge", server, "--client", client)  # bridge: these clients' default
    add_key(user_env, "key-header", server, "--client", client, "--mode", "header")
    add(user_env, "oauth-bridge", "--url", mcp_oauth_server.url, "--client", client)
    add(user_env, "oauth-header", "--url", mcp_oauth_server.url, "--client", client, "--mode", "header")
    assert statuses(user_env, client)["oauth-header"] == "failed"  # no login yet: a real 401
    log_in(user_env, "oauth-bridge")
    log_in(user_env, "oauth-header")

    assert statuses(user_env, client) == dict.fromkeys(
        ("key-bridge", "key-header", "oauth-bridge", "oauth-header"), "connected"
    )
    text = user_file(user_env, client).read_text()
    assert server.key in text  # header mode writes the value itself: no reference the client could refresh
    bridged = entry_in(user_file(user_env, client), client, "key-bridge")
    assert bridged["args"] == ["bridge", "key-bridge"] and not get_format(client).entry_headers(bridged)
    for name in ("oauth-bridge",):
        assert stored_tokens(user_env, name)["access_token"] not in text  # the bridge keeps secrets out


@pytest.fixture(scope="module")
def ten_second_tokens(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    provider = oidc_provider_factory(access_token_ttl=10)
    return provider, mcp_oauth_server_factory(provider)


@pytest.mark.parametrize("client", AGENTS)
def test_the_daemons_refresh_writes_the_new_header_into_the_clients_file(
    daemon: DaemonProcess,
    user_env: UserEnv,
    ten_second_tokens: tuple[OidcProvider, McpOAuthServer],
    responses_api: FakeResponsesApi,
    client: str,
) -> None:
    use_fake_model(user_env, client, responses_api)
    provider, server = ten_second_tokens
    add(user_env, "srv", "--url", server.url, "--client", client, "--mode", "header")
    log_in(user_env, "srv")
    assert statuses(user_env, client) == {"srv": "connected"}  # the client has read (and may rewrite) its file
    first = stored_tokens(user_env, "srv")["access_token"]

    def header() -> str:
        value: str = get_format(client).entry_headers(entry_in(user_file(user_env, client), client, "srv"))[
            "Authorization"
        ]
        return value

    # No `chctl refresh`: the daemon's own schedule refreshes before expiry and rewrites the file.
    wait_for(lambda: header() != f"Bearer {first}", 20, what="a refreshed header in the file")
    assert header() == f"Bearer {stored_tokens(user_env, 'srv')['access_token']}"
    wait_for(lambda: not asyncio.run(provider.is_active(first)), 20, interval_s=0.5, what="the first token to expire")
    assert statuses(user_env, client) == {"srv": "connected"}  # with the header as it is in the file now


def test_claude_code_project_servers_connect_once_the_project_is_trusted(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_key(user_env, "keyed", server, "--client", "claude-code", "--project", ".")
    project_file = user_env.project / ".mcp.json"
    assert entry_in(project_file, "claude-code", "keyed")["type"] == "stdio"
    assert server.key not in project_file.read_text()  # a file meant for git holds no secret
    # What Claude records when a person trusts the folder and approves its servers (we never do this for them).
    claude_json = user_env.home / ".claude.json"
    claude_json.write_text(
        json.dumps(
            {"projects": {str(user_env.project): {"hasTrustDialogAccepted": True, "enabledMcpjsonServers": ["keyed"]}}}
        )
    )
    assert statuses(user_env, "claude-code") == {"keyed": "connected"}


def test_claude_json_keeps_claudes_own_keys_across_our_edits(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_key(user_env, "one", server, "--client", "claude-code")
    statuses(user_env, "claude-code")  # Claude rewrites ~/.claude.json with its own state
    claude_json = user_env.home / ".claude.json"
    claudes = {k: v for k, v in json.loads(claude_json.read_text()).items() if k != "mcpServers"}
    assert claudes, "Claude wrote nothing of its own: the test would prove nothing"
    add_key(user_env, "two", server, "--client", "claude-code", "--mode", "header")
    after = json.loads(claude_json.read_text())
    assert {k: v for k, v in after.items() if k != "mcpServers"} == claudes
    assert set(after["mcpServers"]) == {"one", "two"}
    assert statuses(user_env, "claude-code") == {"one": "connected", "two": "connected"}


# --- several clients at once, chctl clients, remove, doctor -----------------------------------------------


def test_one_add_writes_every_client_and_chctl_clients_lists_them(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_key(user_env, "keyed", server, *(arg for client in OTHER_CLIENTS for arg in ("--client", client)))
    for client in OTHER_CLIENTS:
        path = user_file(user_env, client)
        assert server.key not in path.read_text()
        assert get_format(client).entry_command(entry_in(path, client, "keyed"))[1:] == ["bridge", "keyed"]
        assert path.stat().st_mode & 0o777 == 0o600  # files we create are the user's alone

    listed = {row["client"]: row for row in json.loads(chctl(user_env, "clients", "--json").stdout)["clients"]}
    assert list(listed) == ["opencode", *OTHER_CLIENTS]
    for client in OTHER_CLIENTS:
        assert listed[client]["servers"]["keyed"]["managed"] is True
        assert listed[client]["servers"]["keyed"]["mode"] == "bridge"
        assert listed[client]["found"] != str(user_file(user_env, client))  # the file chctl made is no sign of it
    assert listed["opencode"]["servers"] == {}
    assert "keyed (bridge)" in chctl(user_env, "clients").stdout
    listing = json.loads(chctl(user_env, "list", "--client", "codex", "--json").stdout)
    command = " ".join(get_format("codex").entry_command(entry_in(user_file(user_env, "codex"), "codex", "keyed")))
    assert listing["summaries"]["keyed"] == {"kind": "local", "target": command}
    assert command.endswith("chctl bridge keyed")

    done = chctl(user_env, "remove", "keyed", "--client", "codex", "--client", "cursor")
    assert done.returncode == 0, done.stderr
    assert "[mcp_servers.keyed]" not in user_file(user_env, "codex").read_text()
    assert "keyed" not in json.loads(user_file(user_env, "cursor").read_text())["mcpServers"]
    assert "keyed" in json.loads(user_file(user_env, "gemini").read_text())["mcpServers"]
    bindings = json.loads((user_env.ch_home / "bindings.json").read_text())["keyed"]
    assert sorted(b["client"] for b in bindings) == ["claude-code", "gemini", "vscode"]


def test_one_unusable_target_changes_no_file(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    codex = user_file(user_env, "codex")
    codex.parent.mkdir()
    codex.write_text("[mcp_servers.x\n")  # does not parse
    done = chctl(
        user_env, "add", "keyed", "--url", server.url, "-k", server.key, "--client", "claude-code", "--client", "codex"
    )
    assert done.returncode != 0 and "error[CONFIG_INVALID]" in done.stderr
    assert codex.read_text() == "[mcp_servers.x\n"
    assert not user_file(user_env, "claude-code").exists()


def test_a_file_reference_is_opencodes_alone(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    done = chctl(
        user_env,
        *("add", "keyed", "--url", server.url, "-k", server.key, "--client", "gemini"),
        *("--mode", "header", "--secret-mode", "file"),
    )
    assert "error[INVALID_PARAMS]" in done.stderr and "--bridge" in done.stderr
    assert not user_file(user_env, "gemini").exists()


def test_doctor_checks_each_bound_file_against_its_clients_schema(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_key(user_env, "keyed", server, "--client", "claude-code", "--client", "codex", "--mode", "header")
    assert chctl(user_env, "doctor").returncode == 0
    claude_json = user_env.home / ".claude.json"
    claude_json.write_text(claude_json.read_text().replace('"type": "http"', '"type": "htp"'))
    codex = user_file(user_env, "codex")
    codex.write_text(codex.read_text().replace("http_headers", "headers"))

    done = chctl(user_env, "doctor")
    assert done.returncode == 2  # an entry the client rejects is an error
    assert "Claude Code: mcpServers.keyed.type" in done.stdout
    assert "Codex: mcp_servers.keyed.headers: Codex ignores it" in done.stdout
    assert server.key not in done.stdout + done.stderr


# --- a long session in bridge mode, per client --------------------------------------------------------------


@asynccontextmanager
async def session_as_run_by(user_env: UserEnv, client: str, name: str) -> AsyncIterator[ClientSession]:
    """An MCP session over exactly the command and environment `client` would give `name`'s entry (Codex passes
    only a few variables plus the entry's `env_vars`; the others, their whole environment)."""
    entry = entry_in(user_file(user_env, client), client, name)
    command = get_format(client).entry_command(entry)
    base = user_env.vars()
    if client == "codex":
        base = {k: base[k] for k in ("HOME", "PATH", *entry.get("env_vars", [])) if k in base}
    params = StdioServerParameters(command=command[0], args=command[1:], env={**base, "CH_NO_AUTOSTART": "1"})
    with open_for_writing(Path(os.devnull)) as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def test_a_bridged_session_of_every_client_outlives_several_token_lifetimes(
    daemon: DaemonProcess, user_env: UserEnv, request: pytest.FixtureRequest
) -> None:
    provider, server = request.getfixturevalue("three_second_tokens")  # test_bridge's: rotating 3 s tokens
    add(user_env, "srv", "--url", server.url, *(arg for client in OTHER_CLIENTS for arg in ("--client", client)))
    log_in(user_env, "srv")

    async def session(client: str) -> set[str]:
        seen: set[str] = set()
        async with session_as_run_by(user_env, client, "srv") as mcp:
            deadline = time.monotonic() + 4 * 3 + 1
            while time.monotonic() < deadline:
                seen.add(await call(mcp, "token_id"))  # fails the test on any error
                await asyncio.sleep(0.5)  # the pace of the calls, not synchronisation
        return seen

    async def all_clients() -> list[set[str]]:
        return await asyncio.gather(*(session(client) for client in OTHER_CLIENTS))

    for client, seen in zip(OTHER_CLIENTS, asyncio.run(all_clients()), strict=True):
        assert len(seen) >= 3, f"{client}'s session saw only {len(seen)} tokens"
    assert "invalid_grant" not in provider.log_path.read_text()  # five sessions, one refresh at a time


def fake_model_for(client: str, calls: int, pause_s: float) -> tuple[FakeModel, list[str], dict[str, str]]:
    """A started fake model whose model calls `token_id` `calls` times, `pause_s` apart, and the arguments and
    environment that run one session of `client` against it."""
    if client == "codex":
        api: FakeModel = FakeResponsesApi(tool="token_id", rounds=calls, pause_s=pause_s)
        args = ["exec", "--json", "--skip-git-repo-check", "-c", "analytics.enabled=false", "--disable", "plugins"]
        return api.start(), args, {}
    if client == "gemini":
        api = FakeGeminiApi(tool="token_id", rounds=calls, pause_s=pause_s).start()
        base = api.base_url.split("/v1beta")[0]
        return api, ["--yolo", "--output-format", "json", "-p"], {"GOOGLE_GEMINI_BASE_URL": base, "GEMINI_API_KEY": "x"}
    api = FakeMessagesApi(tool="token_id", rounds=calls, pause_s=pause_s).start()
    args = ["-p", "--allowedTools", "mcp__srv__token_id", "--output-format", "stream-json", "--verbose"]
    # The fake model, and MCP tools offered directly rather than behind Claude's tool search.
    base = api.base_url.removesuffix("/v1")
    return api, args, {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-not-real", "ENABLE_TOOL_SEARCH": "false"}


@pytest.mark.parametrize("client", AGENTS)
def test_one_real_agent_session_through_the_bridge_outlives_several_token_lifetimes(
    daemon: DaemonProcess, user_env: UserEnv, request: pytest.FixtureRequest, client: str
) -> None:
    """The real Claude Code (`claude -p`), Gemini CLI (`gemini -p`) and Codex (`codex exec`): one session whose
    model calls a tool 10 times over about 15 s of 3 s rotating tokens, every call answered."""
    provider, server = request.getfixturevalue("three_second_tokens")
    api, args, extra = fake_model_for(client, calls=10, pause_s=1.2)
    try:
        use_fake_model(user_env, client, api)
        add(user_env, "srv", "--url", server.url, "--client", client)  # bridge: the default for both
        log_in(user_env, "srv")
        done = run_agent(user_env, client, *args, "call token_id ten times", extra_env=extra, timeout=180)
    finally:
        api.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = api.outputs
    assert len(outputs) == 10, outputs
    token_ids = [re.findall(r"\b[0-9a-f]{12}\b", output) for output in outputs]  # what token_id returns
    assert all(len(found) == 1 for found in token_ids), outputs  # every call answered with a token's id
    assert len({found[0] for found in token_ids}) >= 3, f"the session saw only {set(map(tuple, token_ids))}"
    assert "invalid_grant" not in provider.log_path.read_text()


def test_doctor_flags_a_header_in_a_git_tracked_project_file_and_names_the_bridge(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_key(user_env, "keyed", server, "--client", "claude-code", "--project", ".", "--mode", "header")
    subprocess.run(["git", "init", "-q", str(user_env.project)], check=True)
    subprocess.run(["git", "-C", str(user_env.project), "add", ".mcp.json"], check=True)
    checks = json.loads(chctl(user_env, "doctor", "--json").stdout)
    [warning] = [c for c in checks if c["name"] == "inline_secret_in_git"]
    assert ".mcp.json" in warning["message"] and "--client claude-code --mode bridge" in warning["hint"]


def test_a_key_any_client_would_substitute_is_refused_in_every_mode_for_every_client(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    # A stored key may later be written for another client, in header mode: it is refused at the door.
    server = mcp_api_key_server(key="k-${HOME}-not-real")
    for client, mode in (("claude-code", "header"), ("claude-code", "bridge"), ("codex", "header")):
        done = chctl(
            user_env,
            *("add", "keyed", "--url", server.url, "--key-header", server.header, "-k", server.key),
            *("--client", client, "--mode", mode),
        )
        assert "error[INVALID_PARAMS]" in done.stderr and "Claude Code" in done.stderr, done.stderr
        assert server.key not in done.stderr
        assert not user_file(user_env, client).exists()
