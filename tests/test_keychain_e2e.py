"""Secrets at rest in a real keychain: GNOME Keyring's Secret Service on a D-Bus session bus of each test's own
(tests/support/keychain.py), the real daemon, chctl, oidc-provider and MCP SDK servers, `secret-tool` to look."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from typing import Any

import pytest

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_registry import LocalRegistry, remote, server_json, serving
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.keychain import SessionKeychain, files_holding
from tests.support.registry import run, secret
from tests.test_bridge import bridged_session, call


@pytest.fixture(scope="module")
def oauth_peer(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    # Rotating refresh tokens with reuse detection: a lost or stale refresh token shows as invalid_grant.
    provider = oidc_provider_factory(access_token_ttl=120)
    return provider, mcp_oauth_server_factory(provider)


def keychain_daemon(user_env: UserEnv, keychain: SessionKeychain, store: str = "keyring", **env: str) -> DaemonProcess:
    daemon = DaemonProcess(user_env, extra_env={**keychain.env(), "CH_SECRET_STORE": store, **env}).start()
    if "CH_CRASH_AT" not in env:  # the socket listens before start-up ends: one answer says it has ended
        ok(user_env, "daemon", "status")
    return daemon


def ok(user_env: UserEnv, *args: str, **kwargs: Any) -> str:
    done = chctl(user_env, *args, **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout


def key_args(api: McpApiKeyServer) -> list[str]:
    """`chctl add`'s flags for the key server, the key read from $KEYED_KEY (never in argv, nor in test output)."""
    return ["--url", api.url, "--key-header", api.header, "--api-key-env", "KEYED_KEY"]


def add_bridged_servers(user_env: UserEnv, api: McpApiKeyServer, oauth: McpOAuthServer) -> None:
    ok(user_env, "init")
    ok(user_env, "add", "keyed", "--bridge", *key_args(api), extra_env={"KEYED_KEY": api.key})
    ok(user_env, "add", "srv", "--bridge", "--url", oauth.url)
    ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})


def item(keychain: SessionKeychain, user_env: UserEnv, name: str) -> dict[str, Any] | None:
    """Our keychain item for `name`, read with `secret-tool`."""
    raw = keychain.lookup(f"context-harness:{user_env.ch_home.resolve()}", name)  # the service README names
    return json.loads(raw) if raw else None


def secret_is(found: Any, expected: Any) -> bool:
    """Equality that keeps both values out of pytest's assertion report (they are secrets): a mismatch fails here,
    in words, since `assert secret_is(a, b)` failing would show `a` and `b`."""
    if found != expected:
        raise AssertionError("not the expected value (not shown: a secret)")
    return True


def token_file(user_env: UserEnv, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())
    return found


def status_row(user_env: UserEnv, name: str) -> dict[str, Any]:
    rows = json.loads(ok(user_env, "status", "--json"))["servers"]
    return next(r for r in rows if r["name"] == name)


async def both_answer(user_env: UserEnv) -> None:
    async with bridged_session(user_env, "keyed") as keyed, bridged_session(user_env, "srv") as srv:
        assert await call(keyed, "echo", text="one") == "one"
        assert await call(srv, "whoami")


def test_bridged_servers_with_the_keychain_leave_no_secret_in_any_file_and_survive_a_restart(
    user_env: UserEnv,
    keychain: SessionKeychain,
    mcp_api_key_server: McpApiKeyServerFactory,
    oauth_peer: tuple[OidcProvider, McpOAuthServer],
) -> None:
    provider, oauth = oauth_peer
    api = mcp_api_key_server()
    daemon = keychain_daemon(user_env, keychain)
    try:
        add_bridged_servers(user_env, api, oauth)
        first = item(keychain, user_env, "srv")
        assert first is not None and first["refresh_token"]
        ok(user_env, "refresh", "srv")  # rotates the refresh token
        second = item(keychain, user_env, "srv")
        assert second is not None and second["refresh_token"] != first["refresh_token"]
        stamp = token_file(user_env, "keyed")["secret_ref"]["stamp"]
        assert secret_is(item(keychain, user_env, "keyed"), {"api_key": api.key, "stamp": stamp})
        assert asyncio.run(provider.is_active(second["refresh_token"]))
        values = [api.key, first["access_token"], first["refresh_token"], second["access_token"]]
        values += [second["refresh_token"]] + [v for v in (first.get("client_secret"),) if v]
        assert files_holding(user_env.home, values) == []  # not a token file, a config, a lock, a log
        assert "access_token" not in token_file(user_env, "srv")["tokens"]  # metadata stays: expiry, scope
        assert token_file(user_env, "srv")["tokens"]["expires_at"]

        for name in ("keyed", "srv"):
            assert [p["where"] for p in status_row(user_env, name)["secret_at"]] == ["keychain"]
        text = ok(user_env, "status")
        assert "keychain only" in text
        doctor = chctl(user_env, "doctor")
        assert "srv: secret in the keychain (SecretService Keyring" in doctor.stdout
        assert "only: no file holds it" in doctor.stdout

        daemon.stop()  # a restart: the values come back from the keychain, not from any file
        daemon = keychain_daemon(user_env, keychain)
        asyncio.run(both_answer(user_env))
        same = ok(user_env, "token", "srv").strip() == second["access_token"]
        assert same, "chctl token gave another token than the keychain holds"  # (values never in test output)
        assert files_holding(user_env.home, values) == []
    finally:
        daemon.stop()


def test_without_a_session_bus_auto_falls_back_with_a_warning_and_keyring_refuses(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory, oauth_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    api = mcp_api_key_server()
    # No DBUS_* at all; and keyring told to use its null backend, which stores nothing: that is no keychain either.
    null = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    daemon = DaemonProcess(user_env, extra_env={"CH_SECRET_STORE": "keyring", **null}).start()
    try:
        ok(user_env, "init")
        refused = chctl(user_env, "add", "keyed", *key_args(api), extra_env={"KEYED_KEY": api.key})
        assert refused.returncode != 0
        assert "error[KEYCHAIN_UNAVAILABLE]" in refused.stderr and "no D-Bus session bus" in refused.stderr
        assert "hint:" in refused.stderr
        assert files_holding(user_env.home, [api.key]) == []  # nothing in plain text, not even the config
        assert not (user_env.ch_home / "tokens" / "keyed.json").exists()
        ok(user_env, "add", "srv", "--bridge", "--url", oauth_peer[1].url)
        login = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
        assert login.returncode != 0 and "error[KEYCHAIN_UNAVAILABLE]" in login.stderr  # before any browser
        assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    finally:
        daemon.stop()

    daemon = DaemonProcess(user_env, extra_env={"CH_SECRET_STORE": "auto", **null}).start()
    try:
        ok(user_env, "add", "keyed", *key_args(api), extra_env={"KEYED_KEY": api.key})
        assert secret_is(token_file(user_env, "keyed")["api_key"], api.key)  # the token file, 0600, as before
        status = chctl(user_env, "status")
        assert "warning: secrets (CH_SECRET_STORE=auto): no keychain answered (no D-Bus session bus" in status.stderr
        assert "token file" in status.stdout
        doctor = chctl(user_env, "doctor")
        assert doctor.returncode == 1, doctor.stdout  # a warning
        assert "! secrets (CH_SECRET_STORE=auto): no keychain answered" in doctor.stdout
        assert f"keyed: secret in the token file {user_env.ch_home / 'tokens' / 'keyed.json'}" in doctor.stdout
        assert f"inline in {(user_env.project / 'opencode.json').resolve()} (header mode)" in doctor.stdout
    finally:
        daemon.stop()


def test_the_keyring_daemon_killed_mid_run_loses_no_rotated_refresh_token(
    user_env: UserEnv,
    keychain: SessionKeychain,
    mcp_api_key_server: McpApiKeyServerFactory,
    oauth_peer: tuple[OidcProvider, McpOAuthServer],
) -> None:
    provider, oauth = oauth_peer
    api = mcp_api_key_server()
    daemon = keychain_daemon(user_env, keychain, CH_WALLCLOCK_CHECK_S="1")
    try:
        add_bridged_servers(user_env, api, oauth)
        keychain.kill_keyring()

        asyncio.run(both_answer(user_env))  # it serves what it holds
        ok(user_env, "refresh", "srv")  # the server rotates the refresh token: it must not be lost
        kept = token_file(user_env, "srv")
        assert kept["keychain_pending"] is True and "secret_ref" not in kept
        assert asyncio.run(provider.is_active(kept["tokens"]["refresh_token"]))
        logged = [e for e in daemon.log_events() if e.get("event") == "secret_kept_in_token_file"]
        assert logged and logged[0]["level"] == "error"
        status = chctl(user_env, "status")
        assert "the keychain is not answering" in status.stderr
        assert "token file!" in status.stdout
        assert [p["where"] for p in status_row(user_env, "srv")["secret_at"]] == ["token_file"]
        assert "moved into the keychain when it answers" in chctl(user_env, "doctor").stdout

        keychain.start_keyring()  # back, with the same (unlocked) login keyring: the value moves back
        wait_for(lambda: "secret_ref" in token_file(user_env, "srv"), 30, 0.2, what="the move back")
        assert secret_is(item(keychain, user_env, "srv")["refresh_token"], kept["tokens"]["refresh_token"])  # type: ignore[index]
        assert files_holding(user_env.home, [kept["tokens"]["refresh_token"], api.key]) == []
        ok(user_env, "refresh", "srv")  # the token the server considers current was the one kept
    finally:
        daemon.stop()


def test_a_hung_keychain_never_blocks_the_daemon(
    user_env: UserEnv, keychain: SessionKeychain, oauth_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, oauth = oauth_peer
    daemon = keychain_daemon(user_env, keychain, CH_KEYCHAIN_TIMEOUT_S="1", CH_WALLCLOCK_CHECK_S="1")
    try:
        ok(user_env, "init")
        ok(user_env, "add", "srv", "--bridge", "--url", oauth.url)
        ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
        keychain.freeze_keyring()  # owns its name, answers nothing: a locked collection waiting at a prompt
        began = time.monotonic()
        ok(user_env, "refresh", "srv", timeout=30)
        assert time.monotonic() - began < 20  # the deadline, not the D-Bus timeout (25 s) or forever
        ok(user_env, "status", timeout=10)  # the loop is free meanwhile
        refresh_token = token_file(user_env, "srv")["tokens"]["refresh_token"]
        assert asyncio.run(provider.is_active(refresh_token))
        assert "no answer within 1 s" in chctl(user_env, "status").stderr
        keychain.thaw_keyring()
        wait_for(lambda: "secret_ref" in token_file(user_env, "srv"), 30, 0.2, what="the move back")
        ok(user_env, "refresh", "srv")
    finally:
        keychain.thaw_keyring()
        daemon.stop()


def crash_at(user_env: UserEnv, keychain: SessionKeychain, point: str, store: str, *command: str, **env: str) -> None:
    """The daemon SIGKILLs itself at `point` while `chctl COMMAND` runs (with `env` besides)."""
    process = keychain_daemon(user_env, keychain, store, CH_CRASH_AT=point)
    try:
        chctl(user_env, *command, extra_env=env)
        assert process.proc is not None
        process.proc.wait(10)
    finally:
        killed = process.proc is not None and process.proc.poll() == -signal.SIGKILL
        if not killed:  # it never got there: the test fails, and leaves no daemon behind
            process.stop()
    assert killed, process.log()


def test_a_refresh_killed_between_the_keychain_and_the_token_file_keeps_the_rotated_token(
    user_env: UserEnv, keychain: SessionKeychain, oauth_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, oauth = oauth_peer
    daemon = keychain_daemon(user_env, keychain)
    ok(user_env, "init")
    ok(user_env, "add", "srv", "--url", oauth.url)  # header mode: the config must follow too
    ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    daemon.stop()
    config = user_env.project / "opencode.json"
    for point in ("after_secret_write", "after_token_save"):
        before = item(keychain, user_env, "srv")
        assert before is not None
        crash_at(user_env, keychain, point, "keyring", "refresh", "srv")
        rotated = item(keychain, user_env, "srv")
        assert rotated is not None and rotated["refresh_token"] != before["refresh_token"]
        daemon = keychain_daemon(user_env, keychain)
        try:
            # Recovered: the token file names the keychain's newer values, the config has the new header.
            assert token_file(user_env, "srv")["secret_ref"]["stamp"] == rotated["stamp"]
            header = "Bearer " + rotated["access_token"]
            wait_for(lambda h=header: h in config.read_text(), 10, what="the header repaired")
            ok(user_env, "refresh", "srv")  # with the rotated refresh token: no reuse, no new login
        finally:
            daemon.stop()
    current = item(keychain, user_env, "srv")
    assert current is not None and asyncio.run(provider.is_active(current["refresh_token"]))


def usable(user_env: UserEnv, keychain: SessionKeychain, store: str, api: McpApiKeyServer) -> dict[str, Any]:
    """Start the daemon, check both credentials are served and the OAuth one still refreshes; stop it."""
    daemon = keychain_daemon(user_env, keychain, store)
    try:
        assert secret_is(ok(user_env, "token", "keyed").strip(), api.key)
        ok(user_env, "refresh", "srv")  # the refresh token the server considers current was kept
        return {name: status_row(user_env, name)["secret_at"][0]["where"] for name in ("keyed", "srv")}
    finally:
        daemon.stop()


def test_migration_both_ways_with_a_crash_at_each_step_leaves_one_good_copy(
    user_env: UserEnv,
    keychain: SessionKeychain,
    mcp_api_key_server: McpApiKeyServerFactory,
    oauth_peer: tuple[OidcProvider, McpOAuthServer],
) -> None:
    _provider, oauth = oauth_peer
    api = mcp_api_key_server()
    daemon = keychain_daemon(user_env, keychain, "file")
    add_bridged_servers(user_env, api, oauth)
    daemon.stop()
    assert secret_is(token_file(user_env, "keyed")["api_key"], api.key)

    for point in ("after_secret_copy", "after_secret_readback"):
        crash_at(user_env, keychain, point, "file", "secrets", "migrate", "--to", "keyring")
        assert usable(user_env, keychain, "file", api) == {"keyed": "token_file", "srv": "token_file"}
    daemon = keychain_daemon(user_env, keychain, "file")
    try:
        moved = chctl(user_env, "secrets", "migrate", "--to", "keyring")
        assert moved.returncode == 0, moved.stderr
        assert "note: CH_SECRET_STORE=file" in moved.stdout  # the setting would bring new secrets back to files
    finally:
        daemon.stop()
    assert usable(user_env, keychain, "keyring", api) == {"keyed": "keychain", "srv": "keychain"}
    held = item(keychain, user_env, "srv")
    assert held is not None
    assert files_holding(user_env.home, [api.key, held["access_token"], held["refresh_token"]]) == []

    crash_at(user_env, keychain, "after_secret_switch", "keyring", "secrets", "migrate", "--to", "file")
    # Killed after the first server's switch (`keyed`): its new copy is in the token file, read back before the
    # crash, its old one still in the keychain; `srv` was not reached.
    assert secret_is(token_file(user_env, "keyed")["api_key"], api.key)
    assert item(keychain, user_env, "keyed") is not None and "secret_ref" in token_file(user_env, "srv")
    assert usable(user_env, keychain, "keyring", api) == {"keyed": "token_file", "srv": "keychain"}
    daemon = keychain_daemon(user_env, keychain, "file")
    try:
        ok(user_env, "secrets", "migrate", "--to", "file")  # finishes: the copy left in the keychain goes
    finally:
        daemon.stop()
    assert item(keychain, user_env, "keyed") is None and item(keychain, user_env, "srv") is None
    assert usable(user_env, keychain, "file", api) == {"keyed": "token_file", "srv": "token_file"}


def test_a_keychain_that_no_longer_holds_the_secret_says_so(user_env: UserEnv, keychain: SessionKeychain) -> None:
    daemon = keychain_daemon(user_env, keychain)
    try:
        ok(user_env, "init")
        ok(user_env, "add", "keyed", "--url", "http://127.0.0.1:9/mcp", "-k", "k-123456")
    finally:
        daemon.stop()
    keychain.kill_keyring()
    daemon = keychain_daemon(user_env, keychain, CH_KEYCHAIN_TIMEOUT_S="1")
    try:
        row = status_row(user_env, "keyed")
        assert row["state"] == "secret_unreadable" and "the keychain did not answer" in row["last_error"]
        assert "secret unreadable: keychain" in ok(user_env, "status")
        token = chctl(user_env, "token", "keyed")
        assert token.returncode == 1 and token.stdout == ""
        assert chctl(user_env, "doctor").returncode == 2
    finally:
        daemon.stop()


async def test_a_registry_server_s_secret_headers_rest_in_the_keychain_and_no_file_holds_them(
    user_env: UserEnv, keychain: SessionKeychain, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    second = "s" + secrets.token_urlsafe(24)  # the second secret header's value: the server refuses without it
    api = mcp_api_key_server(require=(("X-Api-Secret", second),))
    headers = [secret("X-API-Key", "your key"), secret("X-Api-Secret", "your secret")]
    values = [api.key, second]
    async with serving(LocalRegistry()) as registry:
        registry.publish(server_json("io.test/paired", "Two secrets", remotes=[remote(api.url, headers=headers)]))
        daemon = keychain_daemon(user_env, keychain, CH_REGISTRY_URL=registry.base)
        try:
            ok(user_env, "init")
            both = ["--header-env", "X-API-Key=K1", "--header-env", "X-Api-Secret=K2"]
            added = await run(
                user_env, "add", "io.test/paired", *both, "--bridge", extra_env={"K1": api.key, "K2": second}
            )
            assert added.returncode == 0, added.stderr
        finally:
            daemon.stop()
    record = token_file(user_env, "paired")
    assert {"extra_headers", "api_key"} & set(record) == set()  # the keys only: the values stay out of reports
    held = item(keychain, user_env, "paired")
    stamp = record["secret_ref"]["stamp"]
    assert secret_is(held, {"api_key": api.key, "extra_headers": {"X-Api-Secret": second}, "stamp": stamp})
    assert files_holding(user_env.home, values) == []

    daemon = keychain_daemon(user_env, keychain)  # the values come back from the keychain alone
    try:
        (place,) = status_row(user_env, "paired")["secret_at"]
        assert place["where"] == "keychain" and place["secret_headers"] == ["X-Api-Secret"]
        doctor = chctl(user_env, "doctor").stdout
        assert "paired: secret in the keychain (SecretService Keyring" in doctor
        assert "with the secret headers X-Api-Secret) only: no file holds it" in doctor
        checked = chctl(user_env, "check", "paired")  # the bridge's way: both secret headers sent
        assert checked.returncode == 0 and "✓ paired: ok" in checked.stdout, checked.stdout + checked.stderr

        ok(user_env, "secrets", "migrate", "--to", "file")
        assert secret_is(token_file(user_env, "paired").get("extra_headers"), {"X-Api-Secret": second})
        assert item(keychain, user_env, "paired") is None
        ok(user_env, "secrets", "migrate", "--to", "keyring")
        assert "extra_headers" not in set(token_file(user_env, "paired"))
        assert secret_is((item(keychain, user_env, "paired") or {}).get("extra_headers"), {"X-Api-Secret": second})
        assert files_holding(user_env.home, values) == []
        assert chctl(user_env, "check", "paired").returncode == 0
    finally:
        daemon.stop()
