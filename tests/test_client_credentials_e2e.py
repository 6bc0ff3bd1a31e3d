"""OAuth client credentials (SEP-1046) end to end: the real daemon and chctl against oidc-provider with the grant
enabled, MCP SDK servers that introspect its tokens, and the MCP SDK's client through `chctl bridge`.

`chctl add NAME --url URL --client-credentials --client-id ID` with the secret in NAME_CLIENT_SECRET (HTTP Basic,
as the metadata allows) or `--private-key FILE` (private_key_jwt): the token is fetched at once with no browser,
renewed ahead of expiry (4-second tokens here), and a revoked client ends in `needs login` with the exact fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.long_session import tokens_seen_over
from tests.test_bridge import add_api_key_server, bridged_session, call, stored_tokens

TOKEN_LIFETIME_S = 4
BASIC_CLIENT = "ci-basic"
BASIC_SECRET = "ci-basic-secret-0123456789abcdef"
JWT_CLIENT = "ci-jwt"


def _pem_and_jwk() -> tuple[str, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return pem, {**public, "alg": "ES256", "use": "sig"}


KEY_PEM, PUBLIC_JWK = _pem_and_jwk()


def _client(client_id: str, **metadata: Any) -> str:
    common = {
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "scope": "mcp:read mcp:write",
    }
    return json.dumps({"client_id": client_id, **common, **metadata})


@pytest.fixture(scope="module")
def machines(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    provider = oidc_provider_factory(
        access_token_ttl=TOKEN_LIFETIME_S,
        client_credentials=True,
        registration_management=True,
        strict_client_auth_method=True,  # a client registered for Basic is refused the form, as FastMCP does
        extra_clients=(
            _client(BASIC_CLIENT, client_secret=BASIC_SECRET, token_endpoint_auth_method="client_secret_basic"),
            _client(
                JWT_CLIENT,
                token_endpoint_auth_method="private_key_jwt",
                token_endpoint_auth_signing_alg="ES256",
                jwks={"keys": [PUBLIC_JWK]},
            ),
        ),
    )
    return provider, mcp_oauth_server_factory(provider)


def add_machine(user_env: UserEnv, name: str, url: str, *args: str, secret: str | None = None) -> Any:
    if not (user_env.project / "opencode.json").exists():
        assert chctl(user_env, "init").returncode == 0
    env = {f"{name.upper()}_CLIENT_SECRET": secret} if secret else {}
    return chctl(user_env, "add", name, "--url", url, "--client-credentials", *args, extra_env=env)


def status_of(user_env: UserEnv, name: str) -> dict[str, Any]:
    servers = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    found: dict[str, Any] = next(s for s in servers if s["name"] == name)
    return found


def test_client_secret_basic_token_at_add_then_a_bridged_session_over_six_lifetimes(
    daemon: DaemonProcess, user_env: UserEnv, machines: tuple[OidcProvider, McpOAuthServer]
) -> None:
    provider, server = machines
    added = add_machine(user_env, "ci", server.url, "--bridge", "--client-id", BASIC_CLIENT, secret=BASIC_SECRET)
    assert added.returncode == 0, added.stderr
    assert "got a token for ci (client credentials)" in added.stdout
    row = status_of(user_env, "ci")
    assert row["state"] == "active" and row["login"] == "client_credentials" and row["usable"]
    assert "client credentials" in chctl(user_env, "status").stdout  # the AUTH column says the kind of login

    # The server sees the machine client; every call over six lifetimes is answered.
    seen = asyncio.run(tokens_seen_over(user_env, "ci", 6, TOKEN_LIFETIME_S, whoami=BASIC_CLIENT))
    assert len(seen) >= 5, f"the server saw only {len(seen)} different tokens over six lifetimes"
    log = provider.log_path.read_text()
    assert "strict_client_auth_refused" not in log  # Basic, as the metadata and the registration say
    token_file = user_env.ch_home / "tokens" / "ci.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert BASIC_SECRET in token_file.read_text()  # stored like every other secret...
    assert BASIC_SECRET not in daemon.log() and BASIC_SECRET not in (user_env.project / "opencode.json").read_text()
    assert stored_tokens(user_env, "ci").get("refresh_token") is None  # ...and no refresh token was needed


def test_private_key_jwt_writes_the_header_and_chctl_token_gets_a_new_token_after_expiry(
    daemon: DaemonProcess, user_env: UserEnv, machines: tuple[OidcProvider, McpOAuthServer], tmp_path: Path
) -> None:
    _provider, server = machines
    key_file = tmp_path / "ci.pem"
    key_file.write_text(KEY_PEM)
    added = add_machine(user_env, "cj", server.url, "--client-id", JWT_CLIENT, "--private-key", str(key_file))
    assert added.returncode == 0, added.stderr
    config = json.loads((user_env.project / "opencode.json").read_text())
    first = chctl(user_env, "token", "cj")
    assert first.returncode == 0, first.stderr
    assert config["mcp"]["cj"]["headers"]["Authorization"] == f"Bearer {first.stdout.strip()}"
    key_body = KEY_PEM.splitlines()[1]
    assert key_body not in daemon.log() and key_body not in added.stdout + added.stderr
    assert stored_tokens(user_env, "cj")["expires_at"] - time.time() <= TOKEN_LIFETIME_S + 1
    # Renewed ahead of expiry by the daemon (75 % of 4 s), header rewritten, without a person.
    wait_for(lambda: chctl(user_env, "token", "cj").stdout != first.stdout, 3 * TOKEN_LIFETIME_S, 0.2, "a new token")
    assert status_of(user_env, "cj")["login"] == "client_credentials"


async def _register(provider: OidcProvider) -> dict[str, Any]:
    metadata = {
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "mcp:read mcp:write",
    }
    async with aiohttp.ClientSession() as http, http.post(provider.registration_endpoint, json=metadata) as answer:
        assert answer.status == 201, await answer.text()
        registered: dict[str, Any] = await answer.json()
        return registered


async def _delete(registered: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {registered['registration_access_token']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.delete(registered["registration_client_uri"], headers=headers) as a,
    ):
        assert a.status == 204, await a.text()


def test_a_revoked_client_ends_in_needs_login_with_the_fix_the_others_go_on_and_a_new_secret_mends_it(
    daemon: DaemonProcess,
    user_env: UserEnv,
    machines: tuple[OidcProvider, McpOAuthServer],
    mcp_api_key_server: McpApiKeyServerFactory,
) -> None:
    provider, server = machines
    add_api_key_server(user_env, mcp_api_key_server())  # another server, which must go on
    registered = asyncio.run(_register(provider))
    added = add_machine(
        user_env, "rv", server.url, "--client-id", registered["client_id"], secret=registered["client_secret"]
    )
    assert added.returncode == 0, added.stderr
    token_before = chctl(user_env, "token", "rv").stdout

    asyncio.run(_delete(registered))  # the client is gone at the authorization server: its secret is revoked
    row = wait_for(
        lambda: (r := status_of(user_env, "rv"))["state"] == "needs_reauth" and r,
        4 * TOKEN_LIFETIME_S,
        0.2,
        "needs login",
    )
    assert row["fix"] == "chctl auth rv --client-secret -"
    assert "needs login → chctl auth rv --client-secret -" in chctl(user_env, "status").stdout
    assert "RV_CLIENT_SECRET" in row["last_error"] and "invalid_client" in row["last_error"]
    refused = chctl(user_env, "token", "rv")
    assert refused.returncode == 1 and "chctl auth rv --client-secret -" in refused.stderr
    assert status_of(user_env, "keyed")["usable"]  # the other server goes on
    assert registered["client_secret"] not in daemon.log()
    assert json.loads((user_env.ch_home / "tokens" / "rv.json").read_text())["client_id"] == registered["client_id"]

    # A new client (a rotated secret): `chctl auth rv` takes it, with no browser, and the server works again.
    again = asyncio.run(_register(provider))
    mended = chctl(
        user_env,
        "auth",
        "rv",
        "--client-id",
        again["client_id"],
        extra_env={"RV_CLIENT_SECRET": again["client_secret"]},
    )
    assert mended.returncode == 0, mended.stderr
    assert "logged in to rv" in mended.stdout
    assert status_of(user_env, "rv")["state"] == "active"
    assert chctl(user_env, "token", "rv").stdout not in ("", token_before)


def test_a_wrong_secret_at_add_keeps_the_entry_and_says_how_to_mend_it(
    daemon: DaemonProcess, user_env: UserEnv, machines: tuple[OidcProvider, McpOAuthServer]
) -> None:
    _provider, server = machines
    added = add_machine(user_env, "ws", server.url, "--client-id", BASIC_CLIENT, secret="not-the-secret")
    assert added.returncode == 1
    assert "error[INVALID_CLIENT]" in added.stderr and "chctl auth ws --client-secret -" in added.stderr
    assert "not-the-secret" not in added.stderr + daemon.log()
    assert "ws" in json.loads((user_env.project / "opencode.json").read_text())["mcp"]  # nothing lost
    mended = chctl(user_env, "auth", "ws", extra_env={"WS_CLIENT_SECRET": BASIC_SECRET})
    assert mended.returncode == 0, mended.stderr
    assert status_of(user_env, "ws")["usable"]


def test_client_credentials_need_a_secret_or_a_key_and_refuse_a_key_that_is_not_one(
    daemon: DaemonProcess, user_env: UserEnv, machines: tuple[OidcProvider, McpOAuthServer], tmp_path: Path
) -> None:
    _provider, server = machines
    no_secret = add_machine(user_env, "ns", server.url, "--client-id", BASIC_CLIENT)
    assert no_secret.returncode != 0 and "NS_CLIENT_SECRET" not in os.environ
    assert "error[AUTH_REQUIRED]" in no_secret.stderr and "--private-key" in no_secret.stderr
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    refused = add_machine(user_env, "nk", server.url, "--client-id", JWT_CLIENT, "--private-key", str(bad_key))
    assert refused.returncode != 0 and "not a PEM private key" in refused.stderr
    config = json.loads((user_env.project / "opencode.json").read_text())
    assert "ns" not in config["mcp"] and "nk" not in config["mcp"]  # refused before anything was written


def test_with_a_keychain_the_private_key_rests_there_and_no_file_holds_it(
    user_env: UserEnv, machines: tuple[OidcProvider, McpOAuthServer], tmp_path: Path
) -> None:
    from tests.support.keychain import start_session_keychain

    _provider, server = machines
    keychain = start_session_keychain(user_env.root / "kc", user_env.home)
    daemon = DaemonProcess(user_env, extra_env={**keychain.env(), "CH_SECRET_STORE": "keyring"}).start()
    try:
        key_file = tmp_path / "ci.pem"
        key_file.write_text(KEY_PEM)
        added = add_machine(
            user_env, "kk", server.url, "--bridge", "--client-id", JWT_CLIENT, "--private-key", str(key_file)
        )
        assert added.returncode == 0, added.stderr
        key_body = KEY_PEM.splitlines()[1]
        stored = json.loads(keychain.lookup(f"context-harness:{user_env.ch_home.resolve()}", "kk") or "{}")
        assert key_body in (stored.get("private_key") or "")  # in the keychain item...
        held = [p for p in user_env.ch_home.rglob("*") if p.is_file() and key_body in p.read_text(errors="ignore")]
        assert held == []  # ...and in no file under CH_HOME
        wait_for(lambda: status_of(user_env, "kk")["expires_at"] > time.time() + 1, 10, 0.2, "a token")
        first = chctl(user_env, "token", "kk").stdout
        # Renewed by itself (the key read back from the keychain signs each new assertion).
        wait_for(lambda: chctl(user_env, "token", "kk").stdout != first, 3 * TOKEN_LIFETIME_S, 0.2, "a new token")
    finally:
        daemon.stop()
        keychain.stop()


def test_a_token_the_server_revoked_is_replaced_on_the_401_and_the_bridged_call_is_answered(
    daemon: DaemonProcess,
    user_env: UserEnv,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
) -> None:
    # Hour-long tokens: nothing is renewed ahead of expiry during the test, only on the 401.
    provider = oidc_provider_factory(
        client_credentials=True,
        extra_clients=(
            _client(BASIC_CLIENT, client_secret=BASIC_SECRET, token_endpoint_auth_method="client_secret_basic"),
        ),
    )
    server = mcp_oauth_server_factory(provider)
    added = add_machine(user_env, "hr", server.url, "--bridge", "--client-id", BASIC_CLIENT, secret=BASIC_SECRET)
    assert added.returncode == 0, added.stderr
    spacing_ends = time.monotonic() + float(user_env.vars()["CH_MIN_REFRESH_SPACING_S"]) + 0.2

    async def session() -> tuple[str, str]:
        async with bridged_session(user_env, "hr") as client:
            before = await call(client, "token_id")
            # A token refused within the minimum spacing of the last one is not renewed (by design): past it.
            await asyncio.sleep(max(0.0, spacing_ends - time.monotonic()))
            await provider.revoke(stored_tokens(user_env, "hr")["access_token"], "access_token")
            return before, await call(client, "token_id")  # answered, with a new token asked for on the 401

    before, after = asyncio.run(session())
    assert before != after and status_of(user_env, "hr")["state"] == "active"
    renewed = [e for e in daemon.log_events() if e.get("event") == "token_refreshed" and e.get("server") == "hr"]
    assert len(renewed) == 2  # the first token, and the one asked for on the 401: nothing else


def test_logout_of_a_private_key_jwt_login_signs_the_revocation_and_the_token_is_inactive(
    daemon: DaemonProcess,
    user_env: UserEnv,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
    tmp_path: Path,
) -> None:
    # Hour-long tokens: the one revoked is the one stored before logout (nothing renews it meanwhile).
    jwt_client = _client(
        JWT_CLIENT,
        token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="ES256",
        jwks={"keys": [PUBLIC_JWK]},
    )
    provider = oidc_provider_factory(client_credentials=True, extra_clients=(jwt_client,))
    server = mcp_oauth_server_factory(provider)
    key_file = tmp_path / "ci.pem"
    key_file.write_text(KEY_PEM)
    added = add_machine(user_env, "lo", server.url, "--client-id", JWT_CLIENT, "--private-key", str(key_file))
    assert added.returncode == 0, added.stderr
    token = stored_tokens(user_env, "lo")["access_token"]
    assert asyncio.run(provider.is_active(token))
    done = chctl(user_env, "auth", "lo", "--logout")
    assert done.returncode == 0, done.stderr
    assert "(revoked at the server)" in done.stdout and "NOT revoked" not in done.stderr, done.stderr
    assert not asyncio.run(provider.is_active(token))  # the server took the signed revocation
