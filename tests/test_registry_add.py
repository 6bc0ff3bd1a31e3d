"""`chctl add NAMESPACE/NAME[@VERSION]`: a server from a local MCP registry (shaped as the official API documents
it) whose remotes are real MCP SDK servers on 127.0.0.1, added, probed with `chctl check` and used through the
bridge: URL variables, secret and non-secret headers, sse-only remotes, versions, deprecated and deleted servers,
a server without headers (OAuth or none), and the registry down."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from context_harness.config.jsonc import parse_jsonc
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_registry import LocalRegistry, remote, server_json, serving
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer
from tests.support.env import UserEnv
from tests.support.registry import StartDaemon, keyed_server, run, secret
from tests.support.terminal import Terminal
from tests.test_bridge import bridged_session, call

REGION = ("X-Region", "eu-west-1")


@pytest.fixture
async def registry() -> AsyncIterator[LocalRegistry]:
    async with serving(LocalRegistry()) as running:
        yield running


def entry(user_env: UserEnv, name: str) -> dict[str, Any]:
    found: dict[str, Any] = parse_jsonc((user_env.project / "opencode.json").read_text())["mcp"][name]
    return found


def config_text(user_env: UserEnv) -> str:
    return (user_env.project / "opencode.json").read_text()


def regional_server(url: str, name: str = "io.github.acme/weather") -> dict[str, Any]:
    """A key in X-API-Key, and a region the server needs as well (not a secret: a default and choices)."""
    region = {
        "name": "X-Region",
        "description": "data region",
        "default": "eu-west-1",
        "choices": ["us-east-1", "eu-west-1"],
    }
    return server_json(name, "Forecasts", remotes=[remote(url, headers=[secret("X-API-Key", "your key"), region])])


async def added(user_env: UserEnv, *args: str, env: dict[str, str] | None = None) -> str:
    if not (user_env.project / "opencode.json").exists():
        assert (await run(user_env, "init")).returncode == 0
    done = await run(user_env, "add", *args, extra_env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


async def checked(user_env: UserEnv, name: str) -> None:
    done = await run(user_env, "check", name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"✓ {name}: ok" in done.stdout


# --- headers --------------------------------------------------------------------------------------------------


async def test_the_key_and_a_declared_region_go_into_the_entry_and_the_server_answers(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(require=(REGION,))
    registry.publish(regional_server(server.url))
    start_daemon(registry)
    said = await added(
        user_env, "io.github.acme/weather", "--api-key-env", "WEATHER_KEY", env={"WEATHER_KEY": server.key}
    )
    host = registry.base.removeprefix("http://")
    assert f"added weather (io.github.acme/weather 1.0.0 from {host}) to {user_env.project / 'opencode.json'}" in said
    written = entry(user_env, "weather")
    assert written["url"] == server.url
    assert written["headers"] == {"X-Region": "eu-west-1", "X-API-Key": server.key}
    await checked(user_env, "weather")


async def test_the_bridge_carries_a_registrys_non_secret_header(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(require=(REGION,))
    registry.publish(regional_server(server.url))
    start_daemon(registry)
    await added(user_env, "io.github.acme/weather", "--as", "forecasts", "--bridge", "-k", server.key)
    bridged = entry(user_env, "forecasts")
    assert bridged["type"] == "local" and bridged["command"][-2:] == ["bridge", "forecasts"]
    assert server.key not in config_text(user_env) and "eu-west-1" not in config_text(user_env)
    await checked(user_env, "forecasts")
    async with bridged_session(user_env, "forecasts") as client:
        assert await call(client, "echo", text="through the bridge") == "through the bridge"


async def test_header_with_bridge_is_carried_for_a_server_of_ones_own(
    start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(require=(REGION,))
    start_daemon()
    key_args = ["--key-header", "X-API-Key", "-k", server.key]
    await added(user_env, "regional", "--url", server.url, *key_args, "--header", "X-Region=eu-west-1", "--bridge")
    assert "eu-west-1" not in config_text(user_env)
    async with bridged_session(user_env, "regional") as client:
        assert await call(client, "echo", text="regional") == "regional"
    # Added again for another client, without --header: the recorded URL and headers stay (the last bridge
    # binding's headers are the ones sent).
    await added(user_env, "regional", "--client", "cursor")
    async with bridged_session(user_env, "regional") as client:
        assert await call(client, "echo", text="still regional") == "still regional"


async def test_more_than_one_secret_header_goes_by_the_bridge_only(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(require=(("X-Api-Secret", "s3cr3t-second"),))
    headers = [secret("X-API-Key", "your key"), secret("X-Api-Secret", "your secret")]
    registry.publish(server_json("io.test/paired", "Two secrets", remotes=[remote(server.url, headers=headers)]))
    start_daemon(registry)
    assert (await run(user_env, "init")).returncode == 0
    one_key = await run(user_env, "add", "io.test/paired", "-k", server.key)
    assert one_key.returncode == 1 and "more than one secret header" in one_key.stderr
    assert "--header-env HEADER=ENVVAR" in one_key.stderr
    both = ["--header-env", "X-API-Key=K1", "--header-env", "X-Api-Secret=K2"]
    secrets = {"K1": server.key, "K2": "s3cr3t-second"}
    in_header_mode = await run(user_env, "add", "io.test/paired", *both, extra_env=secrets)
    assert in_header_mode.returncode == 1 and "only the bridge carries them" in in_header_mode.stderr
    assert "--bridge" in in_header_mode.stderr
    await added(user_env, "io.test/paired", *both, "--bridge", env=secrets)
    assert "s3cr3t-second" not in config_text(user_env) and server.key not in config_text(user_env)
    token_file = user_env.ch_home / "tokens" / "paired.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["extra_headers"] == {"X-Api-Secret": "s3cr3t-second"}
    await checked(user_env, "paired")


async def test_a_curated_servers_key_header_is_used_when_the_registry_declares_none(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    # The registry lists Context7's remote without its header; chctl's own list knows it.
    registry.publish(
        server_json("io.github.upstash/context7", "Docs", remotes=[remote("https://mcp.context7.com/mcp")])
    )
    start_daemon(registry)
    search = await run(user_env, "search", "upstash")
    assert re.search(r"io\.github\.upstash/context7\s.*key: CONTEXT7_API_KEY", search.stdout), search.stdout
    await added(user_env, "io.github.upstash/context7", "--as", "docs", "-k", "ctx7-not-real")
    assert entry(user_env, "docs")["headers"] == {"CONTEXT7_API_KEY": "ctx7-not-real"}


# --- URL variables ------------------------------------------------------------------------------------------


@pytest.fixture
async def tenant(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> tuple[McpApiKeyServer, str]:
    """`com.example/tenant` at `http://{host}:{port}/mcp` (host defaults to 127.0.0.1) and the daemon; the MCP
    server it stands for and that server's port."""
    server = mcp_api_key_server()
    variables = {
        "host": {"description": "the tenant's host", "default": "127.0.0.1"},
        "port": {"description": "its port", "isRequired": True},
    }
    url_remote = remote("http://{host}:{port}/mcp", headers=[secret("X-API-Key")], variables=variables)
    registry.publish(server_json("com.example/tenant", "Per tenant", remotes=[url_remote]))
    start_daemon(registry)
    assert (await run(user_env, "init")).returncode == 0
    return server, str(urlsplit(server.url).port)


async def test_url_variables_come_from_var_and_their_defaults(
    tenant: tuple[McpApiKeyServer, str], user_env: UserEnv
) -> None:
    server, port = tenant
    missing = await run(user_env, "add", "com.example/tenant", "-k", server.key)
    assert missing.returncode == 1
    assert "error[INVALID_PARAMS]: com.example/tenant: the variable 'port' (its port) has no value" in missing.stderr
    assert "hint: pass `--var port=VALUE` to `chctl add`" in missing.stderr
    unknown = await run(
        user_env, "add", "com.example/tenant", "-k", server.key, "--var", f"port={port}", "--var", "x=1"
    )
    assert (
        unknown.returncode == 1 and "no variable 'x' in this server (its variables: 'host', 'port')" in unknown.stderr
    )
    await added(user_env, "com.example/tenant", "-k", server.key, "--var", f"port={port}")
    assert entry(user_env, "tenant")["url"] == server.url  # host from its default
    await checked(user_env, "tenant")


async def test_on_a_terminal_chctl_asks_for_the_variables(
    tenant: tuple[McpApiKeyServer, str], user_env: UserEnv
) -> None:
    server, port = tenant
    term = Terminal(user_env, "add", "com.example/tenant", "-k", server.key)
    try:
        await asyncio.to_thread(term.read_until, "host (the tenant's host) [127.0.0.1]: ")
        term.send("\n")  # the default
        await asyncio.to_thread(term.read_until, "port (its port): ")
        term.send(port + "\n")
        assert await asyncio.to_thread(term.wait) == 0, term.output
    finally:
        term.close()
    assert "added tenant (com.example/tenant 1.0.0" in term.output
    assert entry(user_env, "tenant")["url"] == server.url


# --- transports and versions ----------------------------------------------------------------------------------


async def test_an_sse_only_remote_is_added_and_used_over_the_legacy_transport(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(transport="sse")
    legacy = remote(server.url, transport="sse", headers=[secret("X-API-Key")])
    registry.publish(server_json("io.test/legacy", "Old transport only", remotes=[legacy]))
    start_daemon(registry)
    await added(user_env, "io.test/legacy", "--bridge", "-k", server.key)
    await checked(user_env, "legacy")
    async with bridged_session(user_env, "legacy") as client:
        assert await call(client, "echo", text="over sse") == "over sse"


async def test_streamable_http_is_chosen_over_sse_and_a_version_can_be_named(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    new, old = mcp_api_key_server(), mcp_api_key_server(transport="sse")
    both = [
        remote(old.url, transport="sse", headers=[secret("X-API-Key")]),
        remote(new.url, headers=[secret("X-API-Key")]),
    ]
    registry.publish(server_json("io.test/versioned", "v2", version="2.0.0", remotes=both))
    registry.publish(keyed_server("io.test/versioned", old.url, version="1.0.0"), is_latest=False)
    start_daemon(registry)
    await added(user_env, "io.test/versioned", "-k", new.key)
    assert entry(user_env, "versioned")["url"] == new.url
    said = await added(user_env, "io.test/versioned@1.0.0", "--as", "versioned-1", "-k", old.key)
    assert "(io.test/versioned 1.0.0 from" in said
    assert entry(user_env, "versioned-1")["url"] == old.url
    assert any("/versions/1.0.0" in asked for asked in registry.requests)


# --- lifecycle ------------------------------------------------------------------------------------------------


async def test_deprecated_warns_and_adds_deleted_is_refused(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    registry.publish(keyed_server("io.test/old", server.url), status="deprecated", status_message="use io.test/new")
    registry.publish(keyed_server("io.test/gone", server.url), status="deleted", status_message="withdrawn")
    start_daemon(registry)
    said = await added(user_env, "io.test/old", "-k", server.key)
    assert "warning: io.test/old is deprecated: use io.test/new" in said
    before = config_text(user_env)
    gone = await run(user_env, "add", "io.test/gone", "-k", server.key)
    assert gone.returncode == 1
    assert "error[NOT_FOUND]: io.test/gone was deleted from the registry: withdrawn" in gone.stderr
    assert config_text(user_env) == before and not (user_env.ch_home / "tokens" / "gone.json").exists()
    unknown = await run(user_env, "add", "io.test/never")
    assert (
        unknown.returncode == 1 and f"io.test/never is not in {registry.base.removeprefix('http://')}" in unknown.stderr
    )


async def test_a_server_with_only_packages_is_refused_with_the_reason(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv
) -> None:
    package = {"registryType": "npm", "identifier": "@acme/weather", "transport": {"type": "stdio"}}
    registry.publish(server_json("io.test/local-only", "stdio", packages=[package]))
    start_daemon(registry)
    assert (await run(user_env, "init")).returncode == 0
    done = await run(user_env, "add", "io.test/local-only")
    assert done.returncode == 1
    assert "it is a local package (npm @acme/weather), which chctl does not install" in done.stderr
    assert '--command "..."' in done.stderr


async def test_a_server_without_headers_is_added_and_logged_in_with_chctl_auth(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    registry.publish(server_json("io.test/login", "Wants OAuth", remotes=[remote(mcp_oauth_server.url)]))
    start_daemon(registry)
    said = await added(user_env, "io.test/login")
    # Nothing in the entry says how it authenticates: the add asked the server, which wants a login.
    assert "next: run `chctl auth login` to log in" in said and "chctl check login" not in said
    asked = await run(user_env, "check", "login")
    assert asked.returncode == 1 and "chctl auth login" in asked.stdout + asked.stderr
    logged_in = await run(user_env, "auth", "login", extra_env={"BROWSER": browser_command()})
    assert logged_in.returncode == 0, logged_in.stderr
    await checked(user_env, "login")


async def test_while_the_registry_is_down_its_cached_entry_is_used_and_said_so(
    start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    async with serving(LocalRegistry()) as registry:
        registry.publish(keyed_server("io.test/cached", server.url))
        start_daemon(registry, CH_REGISTRY_CACHE_TTL_S="0")
        await added(user_env, "io.test/cached", "-k", server.key)
    said = await added(user_env, "io.test/cached", "--as", "cached-again", "-k", server.key)
    assert re.search(
        r"warning: .*cannot connect to 127\.0\.0\.1:\d+: its answer from \d+ s ago \(cached\) was used", said
    )
    assert entry(user_env, "cached-again")["url"] == server.url
    await checked(user_env, "cached-again")


async def test_the_picker_searches_the_registries_too(
    registry: LocalRegistry, start_daemon: StartDaemon, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    registry.publish(keyed_server("io.github.acme/weather", server.url))
    registry.publish(keyed_server("io.github.acme/weather-eu", server.url))
    start_daemon(registry)
    assert (await run(user_env, "init")).returncode == 0
    term = Terminal(user_env, "add")
    try:
        await asyncio.to_thread(term.read_until, "or words to search the MCP registries): ")
        term.send("weather-eu\n")
        listing = await asyncio.to_thread(term.read_until, "server to add (1-1): ")
        assert re.search(r"^1\s+io\.github\.acme/weather-eu\s+key: X-API-Key\s", listing, re.MULTILINE), listing
        term.send("1\n")
        await asyncio.to_thread(term.read_until, "API key for io.github.acme/weather-eu (hidden): ")
        term.send(server.key + "\n")
        assert await asyncio.to_thread(term.wait) == 0, term.output
    finally:
        term.close()
    assert server.key not in term.output
    assert entry(user_env, "weather-eu")["headers"] == {"X-API-Key": server.key}
    await checked(user_env, "weather-eu")
