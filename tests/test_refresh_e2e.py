"""The refresher in the real daemon against the real oidc-provider with short-lived tokens."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path

import pytest

from context_harness.config.jsonc import parse_jsonc
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.opencode import mcp_list


@pytest.fixture(scope="module")
def short_lived(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    provider = oidc_provider_factory(access_token_ttl=4)
    return provider, mcp_oauth_server_factory(provider)


def header_in(path: Path) -> str | None:
    try:
        entry = parse_jsonc(path.read_text())["mcp"]["srv"]
    except (OSError, ValueError, KeyError):
        return None
    return entry.get("headers", {}).get("Authorization")


def log_in(user_env: UserEnv, server: McpOAuthServer, *targets: str) -> None:
    for target in targets or ("",):
        args = ["add", "srv", "--url", server.url] + ([target] if target else [])
        done = chctl(user_env, *args)
        assert done.returncode == 0, done.stderr
    done = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr


def test_a_4_second_token_is_kept_valid_for_30_seconds(
    daemon: DaemonProcess, user_env: UserEnv, short_lived: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, server = short_lived
    chctl(user_env, "init")
    log_in(user_env, server)
    first_refresh = json.loads((user_env.ch_home / "tokens" / "srv.json").read_text())["tokens"]["refresh_token"]
    config = user_env.project / "opencode.json"

    async def watch() -> tuple[int, set[str], list[str]]:
        observations, seen, inactive = 0, set(), []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            header = header_in(config)
            assert header is not None and header.startswith("Bearer ")
            token = header.removeprefix("Bearer ")
            if not await provider.is_active(token):
                inactive.append(f"at {30 - (deadline - time.monotonic()):.2f}s")
            observations += 1
            seen.add(token)
            await asyncio.sleep(0.25)
        return observations, seen, inactive

    observations, seen, inactive = asyncio.run(watch())
    assert observations >= 60
    assert inactive == [], f"the config held a dead token {len(inactive)} times: {inactive}"
    assert len(seen) >= 6  # the header changed at least 5 times
    status = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert status["state"] == "active" and status["next_refresh_at"] < status["expires_at"]
    # Rotation: the first refresh token is dead at the server, ours works.
    current = json.loads((user_env.ch_home / "tokens" / "srv.json").read_text())["tokens"]["refresh_token"]
    assert not asyncio.run(provider.introspect(first_refresh))["active"]
    assert asyncio.run(provider.introspect(current))["active"]
    assert mcp_list(user_env) == {"srv": "connected"}


def test_global_and_project_configs_both_get_every_token_and_a_broken_one_is_left_alone(
    daemon: DaemonProcess, user_env: UserEnv, short_lived: tuple[OidcProvider, McpOAuthServer]
) -> None:
    _provider, server = short_lived
    chctl(user_env, "init")
    chctl(user_env, "init", "--global")
    log_in(user_env, server, "", "--global")
    project = user_env.project / "opencode.json"
    global_ = user_env.global_config_dir / "opencode.json"
    token_file = user_env.ch_home / "tokens" / "srv.json"

    def current() -> str:
        return "Bearer " + json.loads(token_file.read_text())["tokens"]["access_token"]

    for _ in range(2):  # two refreshes, each reaching both files
        before = current()
        wait_for(lambda b=before: current() != b, 10, what="a refresh")
        wait_for(lambda: header_in(project) == current() and header_in(global_) == current(), 5, what="both written")

    broken = global_.read_text().replace('"mcp"', '"mcp" ,,', 1)
    global_.write_text(broken)
    before = current()
    wait_for(lambda: current() != before, 10, what="a refresh after breaking the global config")
    wait_for(lambda: header_in(project) == current(), 5, what="project still updated")
    assert global_.read_text() == broken  # byte for byte
    row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert str(global_.resolve()) in (row["last_error"] or "")
    assert "does not parse" in row["last_error"]


@pytest.mark.slow
def test_sigkill_during_refresh_and_publish_never_leaves_a_torn_file_and_recovers_without_login(
    user_env: UserEnv, oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> None:
    provider = oidc_provider_factory(access_token_ttl=2)
    server = mcp_oauth_server_factory(provider)
    process = DaemonProcess(user_env).start()
    chctl(user_env, "init")
    log_in(user_env, server)
    process.stop()
    token_file = user_env.ch_home / "tokens" / "srv.json"
    config = user_env.project / "opencode.json"
    rng = random.Random(2026)
    for _ in range(50):
        process = DaemonProcess(user_env).start()
        time.sleep(rng.uniform(0.0, 1.6))  # a refresh happens every ~1.5 s: land anywhere in that cycle
        process.stop(signal.SIGKILL)
        saved = json.loads(token_file.read_text())  # parses: never torn
        assert saved["tokens"]["access_token"]
        assert parse_jsonc(config.read_text())["mcp"]["srv"]["oauth"] is False
    process = DaemonProcess(user_env).start()
    try:

        def active_and_valid() -> bool:
            row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
            header = header_in(config)
            return (
                row["state"] == "active"
                and header is not None
                and asyncio.run(provider.is_active(header.removeprefix("Bearer ")))
            )

        wait_for(active_and_valid, 15, interval_s=0.2, what="recovery to active with a valid token")
    finally:
        process.stop()
