"""A confidential OAuth client's secret at rest (issue 26): in a real keychain, with the same rules as the tokens.

GNOME Keyring's Secret Service on a D-Bus session bus of each test's own (tests/support/keychain.py), the real
daemon and chctl; oidc-provider's static confidential clients, which it holds to the way their registration
says the secret travels (`strict_client_auth_method`, as FastMCP does), so a login, a refresh or a revocation
without the right secret fails; and an authorization server of our own (tests/oauth_fakes.py) whose dynamic
registration answers with a secret. `secret-tool` reads what we stored: the credential's item `srv`, the client
registration's `srv/client`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.oauth_fakes import FakeWorld, running_world
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.keychain import SessionKeychain, files_holding
from tests.support.login import call, login
from tests.test_bridge import bridged_session
from tests.test_bridge import call as call_tool
from tests.test_confidential_clients_e2e import SECRET, confidential_client
from tests.test_keychain_e2e import crash_at, item, keychain_daemon, ok, secret_is, status_row


@pytest.fixture(scope="module")
def confidential_peer(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    provider = oidc_provider_factory(
        strict_client_auth_method=True,
        access_token_ttl=120,
        extra_clients=(
            confidential_client("conf-post", "client_secret_post"),
            confidential_client("conf-basic", "client_secret_basic"),
        ),
    )
    return provider, mcp_oauth_server_factory(provider)


def log_in(user_env: UserEnv, client_id: str = "conf-post") -> None:
    """`chctl auth srv --client-id ID` with the secret in $SRV_CLIENT_SECRET, as a person would give it."""
    env = {"BROWSER": browser_command(), "SRV_CLIENT_SECRET": SECRET}
    ok(user_env, "auth", "srv", "--client-id", client_id, extra_env=env)


def logged_in(user_env: UserEnv, keychain: SessionKeychain, server: McpOAuthServer, store: str = "keyring") -> None:
    """`srv` added in bridge mode and logged in with conf-post and its secret; the daemon stopped again."""
    daemon = keychain_daemon(user_env, keychain, store)
    try:
        ok(user_env, "init")
        ok(user_env, "add", "srv", "--bridge", "--url", server.url)
        log_in(user_env)
    finally:
        daemon.stop()


def log_in_with_the_stored_client(user_env: UserEnv) -> None:
    """`chctl auth srv` and nothing else: the stored registration's client and secret, from wherever it rests
    (oidc-provider refuses the code without that secret)."""
    ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})


def registration(user_env: UserEnv) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((user_env.ch_home / "clients" / "srv.json").read_text())
    return found


def registration_fields(user_env: UserEnv) -> set[str]:
    """The registration's fields that hold something (asserted on these: a failed assert shows what it compared)."""
    return {k for k, v in registration(user_env).items() if v is not None}


def client_item(keychain: SessionKeychain, user_env: UserEnv) -> dict[str, Any] | None:
    return item(keychain, user_env, "srv/client")


def places(user_env: UserEnv) -> list[tuple[str, str | None]]:
    """Where `srv`'s secrets rest, as `chctl status --json` says: (where, of), `of` "client" for its client's."""
    return [(p["where"], p.get("of")) for p in status_row(user_env, "srv")["secret_at"]]


def token_values(found: dict[str, Any] | None) -> list[str]:
    assert found is not None
    return [found["access_token"], found["refresh_token"]]


# A keychain item's fields that are no secret, for asserts (a failed assert shows what it compared).
def stamp_of(found: dict[str, Any] | None) -> str | None:
    return found.get("stamp") if found is not None else None


def identity_of(found: dict[str, Any] | None) -> str | None:
    return found.get("identity") if found is not None else None


def not_there(found: dict[str, Any] | None) -> bool:
    return found is None


async def answers(user_env: UserEnv) -> None:
    async with bridged_session(user_env, "srv") as srv:
        assert await call_tool(srv, "whoami")


def test_a_confidential_client_in_bridge_mode_leaves_its_secret_in_no_file_through_a_refresh_and_a_restart(
    user_env: UserEnv, keychain: SessionKeychain, confidential_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, server = confidential_peer
    daemon = keychain_daemon(user_env, keychain)
    logs = []
    try:
        ok(user_env, "init")
        ok(user_env, "add", "srv", "--bridge", "--url", server.url)
        log_in(user_env)
        assert "client_secret" not in registration_fields(user_env)  # named, not held: the metadata stays
        stored = registration(user_env)
        assert stored["secret_ref"]["key"] == "srv/client"
        assert (stored["client_id"], stored["issuer"]) == ("conf-post", provider.issuer)
        assert stored["token_endpoint_auth_method"] == "client_secret_post"
        kept = {"client_secret": SECRET, "identity": "conf-post", "stamp": stored["secret_ref"]["stamp"]}
        assert secret_is(client_item(keychain, user_env), kept)
        first = item(keychain, user_env, "srv")
        assert first is not None and secret_is(first["client_secret"], SECRET)  # the credential's, for refreshes
        ok(user_env, "refresh", "srv")  # oidc-provider takes the refresh only with the secret, in the form
        second = item(keychain, user_env, "srv")
        values = [SECRET, *token_values(first), *token_values(second)]
        rotated = values[2] != values[4]  # (compared apart: a failed assert would show the values)
        assert rotated
        assert files_holding(user_env.home, values) == []  # not a registration, a token file, a config, a lock

        assert places(user_env) == [("keychain", None), ("keychain", "client")]
        assert "user srv/client" in status_row(user_env, "srv")["secret_at"][1]["detail"]
        assert "keychain only" in ok(user_env, "status")
        doctor = chctl(user_env, "doctor").stdout
        assert "its client secret in the keychain (SecretService Keyring" in doctor
        assert "only: no file holds it" in doctor

        daemon.stop()
        logs.append(daemon.log())
        daemon = keychain_daemon(user_env, keychain)  # a restart without logout: everything from the keychain
        asyncio.run(answers(user_env))
        ok(user_env, "refresh", "srv")
        log_in_with_the_stored_client(user_env)
        values += token_values(item(keychain, user_env, "srv"))
        assert files_holding(user_env.home, values) == []
        assert places(user_env) == [("keychain", None), ("keychain", "client")]
        logs.append(daemon.log())
        assert not any(value in log for log in logs for value in values)
    finally:
        daemon.stop()


def usable(user_env: UserEnv, keychain: SessionKeychain, store: str) -> list[tuple[str, str | None]]:
    """Start the daemon, log in with the stored client (its secret from wherever it rests) and refresh; where
    the secrets rest then; stop it."""
    daemon = keychain_daemon(user_env, keychain, store)
    try:
        log_in_with_the_stored_client(user_env)
        ok(user_env, "refresh", "srv")
        return places(user_env)
    finally:
        daemon.stop()


def migrate(user_env: UserEnv, keychain: SessionKeychain, store: str, to: str) -> None:
    daemon = keychain_daemon(user_env, keychain, store)
    try:
        ok(user_env, "secrets", "migrate", "--to", to)
    finally:
        daemon.stop()


def test_migration_both_ways_moves_the_client_secret_with_a_crash_at_each_step(
    user_env: UserEnv, keychain: SessionKeychain, confidential_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    logged_in(user_env, keychain, confidential_peer[1], "file")
    assert secret_is(registration(user_env)["client_secret"], SECRET)  # CH_SECRET_STORE=file: inline, as before

    for point in ("after_secret_copy:srv/client", "after_secret_readback:srv/client"):
        crash_at(user_env, keychain, point, "file", "secrets", "migrate", "--to", "keyring")
        # Killed before the registration switched: it still holds its secret, the copy in the keychain is unused.
        assert secret_is(registration(user_env)["client_secret"], SECRET)
        assert "secret_ref" not in registration_fields(user_env)
        assert usable(user_env, keychain, "file") == [("token_file", None), ("client_file", "client")]

    migrate(user_env, keychain, "file", "keyring")
    assert "client_secret" not in registration_fields(user_env)
    assert secret_is(client_item(keychain, user_env)["client_secret"], SECRET)  # type: ignore[index]
    assert usable(user_env, keychain, "keyring") == [("keychain", None), ("keychain", "client")]
    assert files_holding(user_env.home, [SECRET, *token_values(item(keychain, user_env, "srv"))]) == []

    crash_at(user_env, keychain, "after_secret_switch:srv/client", "keyring", "secrets", "migrate", "--to", "file")
    # Killed after the registration switched (its secret inline, read back) and before the item was removed.
    assert secret_is(registration(user_env)["client_secret"], SECRET)
    assert "secret_ref" not in registration_fields(user_env)
    assert client_item(keychain, user_env) is not None
    assert usable(user_env, keychain, "file") == [("token_file", None), ("client_file", "client")]
    migrate(user_env, keychain, "file", "file")  # finishes: the copy left in the keychain goes
    assert not_there(client_item(keychain, user_env)) and not_there(item(keychain, user_env, "srv"))
    assert usable(user_env, keychain, "file") == [("token_file", None), ("client_file", "client")]


def crash_in_login(user_env: UserEnv, keychain: SessionKeychain, client_id: str) -> None:
    """A login with `client_id` whose daemon SIGKILLs itself once the client secret's keychain item is written,
    before the registration file names it."""
    command = ("auth", "srv", "--client-id", client_id)
    env = {"BROWSER": browser_command(), "SRV_CLIENT_SECRET": SECRET}
    crash_at(user_env, keychain, "after_secret_write:srv/client", "keyring", *command, **env)


def logged(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == event and e.get("record") == "client"]


def test_a_login_killed_between_the_client_secrets_item_and_its_file_is_seen_and_mended_at_the_next_start(
    user_env: UserEnv, keychain: SessionKeychain, confidential_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    logged_in(user_env, keychain, confidential_peer[1])

    # The same client again: the item is newer than the file's stamp, and it says it is conf-post's: taken.
    before = registration(user_env)["secret_ref"]["stamp"]
    crash_in_login(user_env, keychain, "conf-post")
    newer = stamp_of(client_item(keychain, user_env))
    assert newer != before and registration(user_env)["secret_ref"]["stamp"] == before
    daemon = keychain_daemon(user_env, keychain)
    try:
        assert registration(user_env)["secret_ref"]["stamp"] == newer
        assert logged(daemon, "secret_recovered_from_keychain")
        log_in_with_the_stored_client(user_env)
    finally:
        daemon.stop()

    # Another client: the item now holds conf-basic's secret, the file still names conf-post. Neither is whole
    # (conf-post's secret was overwritten, conf-basic's registration never written): both go, and the next login
    # registers a client of its own (oidc-provider's registration is open: a public one).
    crash_in_login(user_env, keychain, "conf-basic")
    assert identity_of(client_item(keychain, user_env)) == "conf-basic"
    assert registration(user_env)["client_id"] == "conf-post"
    daemon = keychain_daemon(user_env, keychain)
    try:
        assert not (user_env.ch_home / "clients" / "srv.json").exists() and not_there(client_item(keychain, user_env))
        assert logged(daemon, "secret_record_dropped")
        log_in_with_the_stored_client(user_env)
        assert not {"secret_ref", "client_secret"} & registration_fields(user_env)
        assert places(user_env) == [("keychain", None)]  # a public client: no secret of its own anywhere
    finally:
        daemon.stop()


def test_a_client_secret_the_keychain_cannot_give_stops_a_login_and_one_it_lost_drops_its_registration(
    user_env: UserEnv, keychain: SessionKeychain, confidential_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    logged_in(user_env, keychain, confidential_peer[1])

    keychain.kill_keyring()  # locked or gone: the secrets cannot be read at start
    daemon = keychain_daemon(user_env, keychain, "auto", CH_KEYCHAIN_TIMEOUT_S="1")
    try:
        problems = [p["problem"] for p in status_row(user_env, "srv")["secret_at"]]
        assert places(user_env) == [("keychain", None), ("keychain", "client")] and all(problems)
        assert "keychain! only" not in ok(user_env, "status") and "keychain!" in ok(user_env, "status")
        login = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
        assert login.returncode != 0 and "error[KEYCHAIN_UNAVAILABLE]" in login.stderr, login.stderr
        assert "srv's stored OAuth client cannot be used" in login.stderr
        assert "`chctl auth srv --client-id ID --client-secret -`" in login.stderr  # the hint's other way
        assert registration(user_env)["client_id"] == "conf-post"  # kept: no client registered behind its back
    finally:
        daemon.stop()

    keychain.start_keyring()
    keychain.clear(f"context-harness:{user_env.ch_home.resolve()}", "srv/client")  # cleared by hand
    daemon = keychain_daemon(user_env, keychain)
    try:
        assert not (user_env.ch_home / "clients" / "srv.json").exists()  # useless without its secret: dropped
        assert logged(daemon, "secret_record_dropped")
        log_in_with_the_stored_client(user_env)  # none stored now: oidc-provider registers a public client
        assert places(user_env) == [("keychain", None)]
    finally:
        daemon.stop()


async def test_a_registration_answered_with_a_secret_keeps_it_in_the_keychain_and_sends_it_as_registered(
    user_env: UserEnv, keychain: SessionKeychain
) -> None:
    """We ask for a public client (`none`); the server registers one with a secret and `client_secret_post`.
    RFC 7591 §3.2.1: what the response says is what is registered, so that secret is kept (in the keychain) and
    sent in the form at the token endpoint and at revocation, and the log names the method registered."""
    daemon = keychain_daemon(user_env, keychain)
    try:
        async with running_world(FakeWorld(registered_secret_method="client_secret_post")) as world:
            reply = await login(user_env, world, bridge=True)
            assert "result" in reply, reply
            assert world.registrations[0]["token_endpoint_auth_method"] == "none"
            issued = world.client_secrets[0]
            assert registration(user_env)["token_endpoint_auth_method"] == "client_secret_post"
            assert "client_secret" not in registration_fields(user_env)
            assert secret_is(client_item(keychain, user_env)["client_secret"], issued)  # type: ignore[index]
            refreshed = await call(user_env, "token.refresh", name="srv")
            assert "result" in refreshed, refreshed
            # The code and the refresh: the secret in the form, no Basic header (the server refuses either else).
            assert [secret_is(f.get("client_secret"), issued) for f in world.token_forms] == [True, True]
            assert [header is None for header in world.token_auth_headers] == [True, True]
            out = await call(user_env, "auth.logout", name="srv")
            assert out["result"]["revoked"] is True, out
            assert [secret_is(f.get("client_secret"), issued) for f in world.revocation_forms] == [True, True]
            in_order = world.revoked == list(reversed(world.issued_tokens[-2:]))  # refresh token (the grant) first
            assert in_order
        registered = [e for e in daemon.log_events() if e.get("event") == "client_registered"]
        assert [(e["auth_method"], e["asked_auth_method"]) for e in registered] == [("client_secret_post", "none")]
        values = [issued, *world.issued_tokens]
        assert files_holding(user_env.home, values) == []
        assert not any(value in daemon.log() for value in values)
    finally:
        daemon.stop()


def test_without_a_keychain_auto_keeps_the_client_secret_in_its_registration_and_says_so(
    user_env: UserEnv, confidential_peer: tuple[OidcProvider, McpOAuthServer]
) -> None:
    _provider, server = confidential_peer
    null = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}  # and no session bus: no keychain at all
    daemon = DaemonProcess(user_env, extra_env={"CH_SECRET_STORE": "auto", **null}).start()
    try:
        ok(user_env, "init")
        ok(user_env, "add", "srv", "--bridge", "--url", server.url)
        log_in(user_env)
        assert secret_is(registration(user_env)["client_secret"], SECRET)  # the 0600 file, as before
        assert places(user_env) == [("token_file", None), ("client_file", "client")]
        status = chctl(user_env, "status")
        assert "warning: secrets (CH_SECRET_STORE=auto): no keychain answered" in status.stderr
        assert "token file + client file" in status.stdout
        doctor = chctl(user_env, "doctor")
        assert doctor.returncode == 1, doctor.stdout
        path = user_env.ch_home / "clients" / "srv.json"
        assert f"the client registration {path} (its client secret)" in doctor.stdout
    finally:
        daemon.stop()
