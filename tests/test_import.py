"""`chctl import opencode|mcp-remote`: logins made by the real opencode (and files in mcp-remote 0.15's format)
become credentials chctl keeps fresh, without a new login; the source files stay as they were."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from context_harness.services.login_sources import mcp_remote_logins, opencode_logins
from tests.peers.mcp_servers import McpOAuthServer
from tests.peers.oidc import OidcProvider
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.mcp_remote import mcp_remote_login
from tests.support.opencode import mcp_auth, mcp_list

SCHEMA = "https://opencode.ai/config.json"


def write_config(user_env: UserEnv, mcp: dict[str, object]) -> Path:
    path = user_env.project / "opencode.json"
    path.write_text(json.dumps({"$schema": SCHEMA, "mcp": mcp}, indent=2))
    return path


def config_entry(user_env: UserEnv, name: str) -> dict[str, object]:
    return json.loads((user_env.project / "opencode.json").read_text())["mcp"][name]


def stored(user_env: UserEnv, name: str) -> dict[str, object]:
    return json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())


@pytest.fixture
def opencode_login(user_env: UserEnv, mcp_oauth_server: McpOAuthServer) -> Path:
    """A user who never used chctl: an opencode.json with `srv`, logged in with `opencode mcp auth srv`."""
    write_config(user_env, {"srv": {"type": "remote", "url": mcp_oauth_server.url}})
    return mcp_auth(user_env, "srv")


def test_a_login_made_by_opencode_is_adopted_connects_and_refreshes(
    daemon: DaemonProcess,
    user_env: UserEnv,
    opencode_login: Path,
    mcp_oauth_server: McpOAuthServer,
    oidc_provider: OidcProvider,
) -> None:
    source = opencode_login.read_bytes()
    held = json.loads(source)["srv"]
    config_before = (user_env.project / "opencode.json").read_bytes()

    dry = chctl(user_env, "import", "opencode", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "srv" in dry.stdout and "would adopt" in dry.stdout and "nothing was changed" in dry.stdout
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    assert (user_env.project / "opencode.json").read_bytes() == config_before

    done = chctl(user_env, "import", "opencode", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["servers"]
    assert (row["name"], row["outcome"], row["has_refresh_token"]) == ("srv", "adopted", True)
    assert held["tokens"]["accessToken"] not in done.stdout + done.stderr

    credential = stored(user_env, "srv")
    assert credential["issuer"] == oidc_provider.issuer and credential["state"] == "active"
    assert credential["tokens"]["refresh_token"] == held["tokens"]["refreshToken"]
    client = json.loads((user_env.ch_home / "clients" / "srv.json").read_text())
    assert (client["client_id"], client["issuer"]) == (held["clientInfo"]["clientId"], oidc_provider.issuer)
    entry = config_entry(user_env, "srv")
    assert entry["headers"] == {"Authorization": f"Bearer {held['tokens']['accessToken']}"}
    assert entry["oauth"] is False
    assert opencode_login.read_bytes() == source, "the source is only read"

    assert mcp_list(user_env)["srv"] == "connected"
    refreshed = chctl(user_env, "refresh", "srv")
    assert refreshed.returncode == 0, refreshed.stderr
    header = config_entry(user_env, "srv")["headers"]["Authorization"]
    assert header != f"Bearer {held['tokens']['accessToken']}"
    assert asyncio.run(oidc_provider.is_active(header.removeprefix("Bearer ")))

    again = chctl(user_env, "import", "opencode", "--json")  # opencode's copy is older now: never put back
    [row] = json.loads(again.stdout)["servers"]
    assert row["outcome"] == "skipped" and "already holds" in row["reason"]
    assert config_entry(user_env, "srv")["headers"]["Authorization"] == header


def test_an_expired_login_is_refreshed_at_once_and_one_that_cannot_be_is_needs_reauth(
    daemon: DaemonProcess, user_env: UserEnv, opencode_login: Path, mcp_oauth_server: McpOAuthServer
) -> None:
    document = json.loads(opencode_login.read_text())
    document["srv"]["tokens"]["expiresAt"] = time.time() - 60  # opencode's own file, an hour later
    dead = json.loads(json.dumps(document["srv"]))
    dead["tokens"]["refreshToken"] = "revoked-long-ago-not-real"
    document["dead"] = dead
    opencode_login.write_text(json.dumps(document, indent=2))

    done = chctl(user_env, "import", "opencode", "--json")
    assert done.returncode == 0, done.stderr
    outcomes = {row["name"]: row for row in json.loads(done.stdout)["servers"]}
    assert outcomes["srv"]["outcome"] == "refreshed" and outcomes["srv"]["expires_at"] > time.time()
    assert outcomes["dead"]["outcome"] == "needs_reauth"
    assert stored(user_env, "dead")["state"] == "needs_reauth"  # kept, never dropped silently
    status = chctl(user_env, "status").stdout
    assert "needs login → chctl auth dead" in status
    assert mcp_list(user_env)["srv"] == "connected"


def test_a_login_about_to_expire_without_a_refresh_token_is_adopted_and_its_login_said_to_be_due(
    daemon: DaemonProcess, user_env: UserEnv, opencode_login: Path
) -> None:
    # The refresh an import starts for a token that expires within a minute cannot happen: no refresh token.
    document = json.loads(opencode_login.read_text())
    tokens = document["srv"]["tokens"]
    del tokens["refreshToken"]
    tokens["expiresAt"] = time.time() + 50  # inside the minute a token handed out must still have
    opencode_login.write_text(json.dumps(document, indent=2))

    done = chctl(user_env, "import", "opencode", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["servers"]
    assert (row["name"], row["outcome"], row["has_refresh_token"]) == ("srv", "adopted", False)
    assert "no refresh token" in row["reason"] and "chctl auth srv" in row["reason"]
    assert stored(user_env, "srv")["state"] == "active"
    header = config_entry(user_env, "srv")["headers"]  # written, for the moment it still works
    assert header == {"Authorization": f"Bearer {tokens['accessToken']}"}


def test_a_login_made_by_mcp_remote_is_matched_by_url_hash_and_its_entry_becomes_remote(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    url = mcp_oauth_server.url
    write_config(user_env, {"srv": {"type": "local", "command": ["npx", "-y", "mcp-remote@0.15.1", url]}})
    store = mcp_remote_login(user_env, url)
    [tokens_file] = store.glob("*_tokens.json")
    held = json.loads(tokens_file.read_text())
    before = {p.name: p.read_bytes() for p in store.iterdir()}

    done = chctl(user_env, "import", "mcp-remote", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["servers"]
    assert (row["name"], row["outcome"], row["server_url"]) == ("srv", "adopted", url)
    entry = config_entry(user_env, "srv")
    assert entry["type"] == "remote" and entry["url"] == url and entry["oauth"] is False
    assert entry["headers"] == {"Authorization": f"Bearer {held['access_token']}"}
    client = json.loads((user_env.ch_home / "clients" / "srv.json").read_text())
    assert client["issuer"] == oidc_provider.issuer
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before, "the source is only read"

    assert mcp_list(user_env)["srv"] == "connected"
    assert chctl(user_env, "refresh", "srv").returncode == 0
    assert config_entry(user_env, "srv")["headers"] != {"Authorization": f"Bearer {held['access_token']}"}


def test_the_readers_take_the_exact_formats_and_name_what_they_cannot_use() -> None:
    logins, unusable = opencode_logins(
        {
            "a": {
                "tokens": {"accessToken": "at-not-real", "expiresAt": 1795867790.5, "scope": "x"},
                "clientInfo": {"clientId": "c1", "clientIdIssuedAt": 1795864189},
                "serverUrl": "https://a.example/mcp",
            },
            "pending": {"codeVerifier": "v-not-real", "oauthState": "s", "serverUrl": "https://b.example/mcp"},
        }
    )
    [a] = logins
    assert (a.name, a.server_url, a.client_id) == ("a", "https://a.example/mcp", "c1")
    assert a.tokens.expires_at == 1795867790.5
    assert [u.where for u in unusable] == ["pending"]

    files = {
        "h1_tokens.json": {"access_token": "at-not-real", "expires_at": 1795867790500, "issuer": "https://as"},
        "h1_client_info.json": {"client_id": "c2", "token_endpoint_auth_method": "none"},
        "h1_code_verifier_x.txt": None,
    }
    [m] = mcp_remote_logins(files)[0]
    assert (m.url_hash, m.client_id, m.issuer, m.tokens.expires_at) == ("h1", "c2", "https://as", 1795867790.5)
