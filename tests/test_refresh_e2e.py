"""The refresher in the real daemon against the real oidc-provider with short-lived tokens."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from context_harness.config.jsonc import parse_jsonc
from context_harness.oauth.discovery import initialize_request
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.keychain import StoreUnderTest, store_under_test

FILES = StoreUnderTest({"CH_SECRET_STORE": "file"})  # the token files, as in every other test of this module
WATCH_S, WATCH_LOOKS = 30, 60  # how long, and at least how often, the 4 s token test looks at the config


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
    user_env: UserEnv, short_lived: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, server = short_lived
    # The default plan (75 % of the lifetime, at most 2 s early) leaves a 4 s token ~0.5 s: the server's `exp`
    # is in whole seconds, so the token dies up to 1 s before `expires_in` says. Half a second is a refresh a
    # loaded machine runs late. A quarter of the lifetime leaves ~2 s, and still 25+ refreshes in 30 s.
    daemon = DaemonProcess(user_env, extra_env={"CH_REFRESH_FRACTION": "0.25"}).start()
    try:
        kept_valid_for_30_seconds(user_env, provider, server)
    finally:
        daemon.stop()


def kept_valid_for_30_seconds(user_env: UserEnv, provider: OidcProvider, server: McpOAuthServer) -> None:
    chctl(user_env, "init")
    log_in(user_env, server)
    first_refresh = json.loads((user_env.ch_home / "tokens" / "srv.json").read_text())["tokens"]["refresh_token"]
    config = user_env.project / "opencode.json"

    async def watch() -> tuple[set[str], list[str]]:
        observations, seen, inactive = 0, set(), []
        started = time.monotonic()
        # 30 s, and at least 60 looks however slowly a loaded machine answers them.
        while time.monotonic() - started < WATCH_S or observations < WATCH_LOOKS:
            header = header_in(config)
            assert header is not None and header.startswith("Bearer ")
            token = header.removeprefix("Bearer ")
            # A dead answer counts only if the config still holds that token afterwards: a refresh landing
            # between our read and the introspection is not the config holding a dead token.
            if not await provider.is_active(token) and header_in(config) == header:
                inactive.append(f"at {time.monotonic() - started:.2f}s")
            observations += 1
            seen.add(token)
            await asyncio.sleep(0.25)
        return seen, inactive

    seen, inactive = asyncio.run(watch())
    assert inactive == [], f"the config held a dead token {len(inactive)} times: {inactive}"
    assert len(seen) >= 6  # the header changed at least 5 times
    status = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert status["state"] == "active" and status["next_refresh_at"] < status["expires_at"]
    # Rotation: the first refresh token is dead at the server, ours works.
    assert not asyncio.run(provider.introspect(first_refresh))["active"]
    wait_for(lambda: stored_refresh_token_is_active(user_env, provider), 30, what="a live refresh token stored")
    # The MCP server accepts the header the refresher wrote. Asked right after a refresh, with the token's
    # whole 4 s ahead: `opencode mcp list` needs several seconds to start on a loaded machine, longer than
    # a 4 s token lives, so opencode itself is checked with long-lived tokens in test_e2e_oauth.py.
    just_written = header_in(config)
    wait_for(lambda: header_in(config) != just_written, 10, interval_s=0.01, what="the next refresh")
    assert asyncio.run(initialize_status(server.url, header_in(config))) == 200
    assert asyncio.run(initialize_status(server.url, "Bearer not-a-token")) == 401  # the server does check


def stored_refresh_token_is_active(user_env: UserEnv, provider: OidcProvider) -> bool:
    """The refresh token stored is live at the server. A refresh that rotates it while we ask makes the answer
    about a token no longer stored: that answer does not count (False, to ask again)."""
    token_file = user_env.ch_home / "tokens" / "srv.json"
    stored = json.loads(token_file.read_text())["tokens"]["refresh_token"]
    active = asyncio.run(provider.introspect(stored))["active"]
    return bool(active) and json.loads(token_file.read_text())["tokens"]["refresh_token"] == stored


async def initialize_status(url: str, authorization: str | None) -> int:
    """The HTTP status of an MCP `initialize` sent with this Authorization header."""
    headers = {"Accept": "application/json, text/event-stream", "Authorization": authorization or ""}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=initialize_request(), headers=headers) as resp:
            return resp.status


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


@pytest.fixture(params=["file", "keyring"])
def store(request: pytest.FixtureRequest, user_env: UserEnv) -> Iterator[StoreUnderTest]:
    """Each test using it runs with the token files and with a real keychain (tests/support/keychain.py)."""
    chosen = store_under_test(request.param, user_env.root / "kc", user_env.home)
    yield chosen
    if chosen.keychain is not None:
        chosen.keychain.stop()


def bound_headers_match_the_stored_credential(user_env: UserEnv, store: StoreUnderTest = FILES) -> bool:
    """Every config bound to srv carries exactly the stored token, and every binding's config has the entry."""
    credential = store.stored(user_env.ch_home, "srv")
    bindings = json.loads((user_env.ch_home / "bindings.json").read_text()).get("srv", [])
    expected = "Bearer " + credential["tokens"]["access_token"]
    return bool(bindings) and all(header_in(Path(b["path"])) == expected for b in bindings)


def files_are_whole(user_env: UserEnv, *configs: Path, store: StoreUnderTest = FILES) -> None:
    saved = store.stored(user_env.ch_home, "srv")  # the token file parses: never torn
    assert saved["tokens"]["access_token"] and saved["tokens"]["refresh_token"]
    json.loads((user_env.ch_home / "bindings.json").read_text())
    for config in configs:
        parse_jsonc(config.read_text())


def crash_at(user_env: UserEnv, point: str, *command: str, store: StoreUnderTest = FILES) -> None:
    """Start the daemon set to SIGKILL itself at `point`, make it get there with `chctl COMMAND`, see it die."""
    process = DaemonProcess(user_env, extra_env={**store.env, "CH_CRASH_AT": point}).start()
    chctl(user_env, *command)  # its connection breaks when the daemon dies
    assert process.proc is not None
    process.proc.wait(10)
    assert process.proc.returncode == -signal.SIGKILL, process.log()


@pytest.mark.slow
def test_sigkill_at_each_write_boundary_is_repaired_at_restart_without_a_login(
    user_env: UserEnv,
    store: StoreUnderTest,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
) -> None:
    # Long-lived tokens: nothing refreshes on its own, so only the restart's repair can make configs right.
    provider = oidc_provider_factory(access_token_ttl=120)
    server = mcp_oauth_server_factory(provider)
    project = user_env.project / "opencode.json"
    global_ = user_env.global_config_dir / "opencode.json"
    process = DaemonProcess(user_env, extra_env=store.env).start()
    chctl(user_env, "init")
    chctl(user_env, "init", "--global")
    log_in(user_env, server, "", "--global")
    process.stop()

    # The second: one of the two configs written. With the keychain, also between its write and the token file's.
    points = ["after_token_save", "after_config_write"] + (["after_secret_write"] if store.keychain else [])
    for point in points:
        before = store.stored(user_env.ch_home, "srv")["tokens"]["access_token"]
        crash_at(user_env, point, "refresh", "srv", store=store)
        files_are_whole(user_env, project, global_, store=store)
        assert store.stored(user_env.ch_home, "srv")["tokens"]["access_token"] != before  # the new token was saved
        assert not bound_headers_match_the_stored_credential(user_env, store)  # ...and a config was left behind
        process = DaemonProcess(user_env, extra_env=store.env).start()
        try:
            wait_for(
                lambda: bound_headers_match_the_stored_credential(user_env, store), 10, what=f"repair after {point}"
            )
        finally:
            process.stop()

    # `chctl add` dies after binding the global config again, before writing its entry.
    process = DaemonProcess(user_env, extra_env=store.env).start()
    assert chctl(user_env, "remove", "srv", "--global").returncode == 0
    process.stop()
    crash_at(user_env, "after_binding_write", "add", "srv", "--url", server.url, "--global", store=store)
    files_are_whole(user_env, project, global_, store=store)
    process = DaemonProcess(user_env, extra_env=store.env).start()
    try:
        wait_for(
            lambda: bound_headers_match_the_stored_credential(user_env, store), 10, what="repair after the binding"
        )
        bound = [b["path"] for b in json.loads((user_env.ch_home / "bindings.json").read_text())["srv"]]
        assert bound == [str(project.resolve())]  # the binding without an entry was dropped
        added = chctl(user_env, "add", "srv", "--url", server.url, "--global")
        assert added.returncode == 0, added.stderr  # adding it again just works
        assert bound_headers_match_the_stored_credential(user_env, store)
        # No new login was needed: the rotated refresh token saved before each crash still refreshes.
        assert chctl(user_env, "refresh", "srv").returncode == 0
        header = header_in(project)
        assert header is not None and asyncio.run(provider.is_active(header.removeprefix("Bearer ")))
        assert bound_headers_match_the_stored_credential(user_env, store)
    finally:
        process.stop()
