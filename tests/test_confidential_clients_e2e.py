"""A confidential client (one with a secret) against the real oidc-provider, which holds each client to the
way its registration says the secret travels (issue 17 §5).

The peer runs with `strict_client_auth_method` (stock oidc-provider takes a secret either way; FastMCP does
not). The user brings `--client-id` and a secret and says nothing about how it is sent: a client registered for
`client_secret_post` is refused with Basic (`invalid_client`), so chctl sends it once more in the form and
remembers that; one registered for Basic but told `--token-auth-method client_secret_post` is the other way
round. Logout (RFC 7009) then authenticates the client exactly as the token endpoint did, or oidc-provider
refuses to revoke and both tokens stay valid.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator

import pytest

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

SECRET = secrets.token_urlsafe(24)  # per test session; travels to oidc-provider in its environment


def confidential_client(client_id: str, method: str) -> str:
    return json.dumps(
        {
            "client_id": client_id,
            "client_secret": SECRET,
            "token_endpoint_auth_method": method,
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }
    )


@pytest.fixture
def provider(oidc_provider_factory: OidcProviderFactory) -> OidcProvider:
    return oidc_provider_factory(
        strict_client_auth_method=True,
        extra_clients=(
            confidential_client("conf-post", "client_secret_post"),
            confidential_client("conf-basic", "client_secret_basic"),
        ),
    )


@pytest.fixture
def added(
    daemon: DaemonProcess, user_env: UserEnv, provider: OidcProvider, mcp_oauth_server_factory: McpOAuthServerFactory
) -> Iterator[str]:
    server = mcp_oauth_server_factory(provider)
    assert chctl(user_env, "init").returncode == 0
    done = chctl(user_env, "add", "srv", "--url", server.url)
    assert done.returncode == 0, done.stderr
    yield "srv"


def stored(user_env: UserEnv, kind: str) -> dict:
    return json.loads((user_env.ch_home / kind / "srv.json").read_text())


@pytest.mark.parametrize(
    ("client_id", "flags", "method"),
    [
        ("conf-post", [], "client_secret_post"),
        ("conf-basic", ["--token-auth-method", "client_secret_post"], "client_secret_basic"),
    ],
)
def test_a_confidential_client_logs_in_the_way_the_server_takes_and_logout_revokes_both_tokens(
    user_env: UserEnv, provider: OidcProvider, added: str, client_id: str, flags: list[str], method: str
) -> None:
    env = {"BROWSER": browser_command(), "SRV_CLIENT_SECRET": SECRET}
    done = chctl(user_env, "auth", "srv", "--client-id", client_id, *flags, extra_env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert stored(user_env, "clients")["token_endpoint_auth_method"] == method  # remembered with the client
    credential = stored(user_env, "tokens")
    assert credential["token_endpoint_auth_method"] == method
    access, refresh = credential["tokens"]["access_token"], credential["tokens"]["refresh_token"]
    assert asyncio.run(provider.is_active(access)) and asyncio.run(provider.is_active(refresh))

    assert chctl(user_env, "refresh", "srv").returncode == 0  # refreshes authenticate the same way
    credential = stored(user_env, "tokens")
    access, refresh = credential["tokens"]["access_token"], credential["tokens"]["refresh_token"]

    done = chctl(user_env, "auth", "srv", "--logout")
    assert done.returncode == 0, done.stderr
    assert "(revoked at the server)" in done.stdout and "NOT revoked" not in done.stderr, done.stderr
    assert not asyncio.run(provider.is_active(access))
    assert not asyncio.run(provider.is_active(refresh))


def test_a_refresh_refused_the_stored_way_succeeds_the_other_and_both_files_learn_it(
    user_env: UserEnv, provider: OidcProvider, added: str
) -> None:
    """A login stored with the wrong way (an import guesses it) is not thrown away at the first refresh."""
    env = {"BROWSER": browser_command(), "SRV_CLIENT_SECRET": SECRET}
    assert chctl(user_env, "auth", "srv", "--client-id", "conf-post", extra_env=env).returncode == 0
    for kind in ("tokens", "clients"):
        path = user_env.ch_home / kind / "srv.json"
        doc = json.loads(path.read_text())
        doc["token_endpoint_auth_method"] = "client_secret_basic"
        path.write_text(json.dumps(doc))
    done = chctl(user_env, "refresh", "srv")
    assert done.returncode == 0, done.stderr
    assert stored(user_env, "tokens")["token_endpoint_auth_method"] == "client_secret_post"
    assert stored(user_env, "clients")["token_endpoint_auth_method"] == "client_secret_post"
    assert asyncio.run(provider.is_active(stored(user_env, "tokens")["tokens"]["access_token"]))
