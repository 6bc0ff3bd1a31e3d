"""Enterprise-managed authorization (SEP-990, cross-app access) end to end, with real peers:

- oidc-provider as the company identity provider: a browser-less OpenID Connect sign-in with the fake browser,
  4-second ID tokens renewed with its rotating refresh token, and its RFC 8693 token exchange (added through its
  extension point `registerGrantType`, tests/peers/oidc_server.mjs) that issues ID-JAGs;
- our own MCP authorization server (tests/peers/id_jag_server.py) that takes an ID-JAG with the JWT-bearer grant
  after checking it against the IdP's JWKS, and issues 4-second access tokens;
- MCP SDK servers that introspect those tokens, reached through `chctl bridge` by the MCP SDK's client.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.keychain import SessionKeychain, files_holding
from tests.support.long_session import tokens_seen_over
from tests.test_bridge import APP_SCRIPT, add_api_key_server

LIFETIME_S = 4  # the IdP's ID tokens and the MCP servers' access tokens
IDP_CLIENT = "ch-idp-client"  # the MCP client's registration at the company IdP
MCP_CLIENT = "ch-mcp-client"  # ... and at the MCP server's authorization server
MCP_SECRET = "ch-mcp-secret-" + secrets.token_hex(8)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG_SERVER = Path(__file__).resolve().parent / "peers" / "id_jag_server.py"


@dataclass
class Company:
    idp: OidcProvider
    authorization_server: PeerProcess
    servers: list[McpOAuthServer]
    _peers: list[PeerProcess] = field(default_factory=list, repr=False)

    @property
    def issuer(self) -> str:
        return str(self.authorization_server.ready["issuer"])


def start_company(factory: OidcProviderFactory, logs: Path, *, rotate: bool) -> Company:
    """The company IdP (rotating refresh tokens with reuse detection, or not), the authorization server of its MCP
    servers, and two MCP servers that trust it."""
    idp_client = {
        "client_id": IDP_CLIENT,
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
        "response_types": ["code"],
    }
    idp = factory(
        id_token_ttl=LIFETIME_S,
        access_token_ttl=LIFETIME_S,
        rotate_refresh_token=rotate,
        token_exchange=True,
        id_jag_client_id=MCP_CLIENT,
        extra_clients=(json.dumps(idp_client),),
    )
    introspection_secret = secrets.token_urlsafe(16)
    authorization_server = start_peer(
        [
            sys.executable,
            str(ID_JAG_SERVER),
            "--idp",
            idp.issuer,
            "--client-id",
            MCP_CLIENT,
            "--token-ttl",
            str(LIFETIME_S),
        ],
        log_path=logs / "id-jag-server.log",
        env={"ID_JAG_CLIENT_SECRET": MCP_SECRET, "ID_JAG_INTROSPECTION_SECRET": introspection_secret},
    )
    issuer = str(authorization_server.ready["issuer"])
    peers, servers = [authorization_server], []
    for n in range(2):
        args = ["--introspect", issuer, "--client-id", "mcp-resource-server", "--scopes", ""]
        peer = start_peer(
            [sys.executable, str(APP_SCRIPT), *args],
            log_path=logs / f"mcp-{n}.log",
            env={"MCP_PEER_CLIENT_SECRET": introspection_secret},
        )
        peers.append(peer)
        url = str(peer.ready["url"])
        servers.append(McpOAuthServer(url, url, issuer, (), logs / f"mcp-{n}.log", peer))
    return Company(idp, authorization_server, servers, peers)


@pytest.fixture(scope="module")
def company(oidc_provider_factory: OidcProviderFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Company]:
    started = start_company(oidc_provider_factory, tmp_path_factory.mktemp("company"), rotate=True)
    yield started
    for peer in started._peers:
        peer.stop()


@pytest.fixture(scope="module")
def steady_company(
    oidc_provider_factory: OidcProviderFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Company]:
    """A company whose IdP does not rotate refresh tokens: a hung IdP answers every queued refresh once it runs
    again, and with rotation and reuse detection those would revoke the grant (as they should)."""
    started = start_company(oidc_provider_factory, tmp_path_factory.mktemp("steady"), rotate=False)
    yield started
    for peer in started._peers:
        peer.stop()


def sign_in(user_env: UserEnv, company: Company) -> None:
    added = chctl(user_env, "idp", "add", "corp", "--issuer", company.idp.issuer, "--client-id", IDP_CLIENT)
    assert added.returncode == 0, added.stderr
    done = chctl(user_env, "idp", "login", "corp", extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr
    assert "signed in to corp as alice" in done.stdout


def add_app(user_env: UserEnv, name: str, server: McpOAuthServer, *args: str) -> Any:
    if not (user_env.project / "opencode.json").exists():
        assert chctl(user_env, "init").returncode == 0
    env = {f"{name.upper()}_CLIENT_SECRET": MCP_SECRET}
    return chctl(
        user_env, "add", name, "--url", server.url, "--idp", "corp", "--client-id", MCP_CLIENT, *args, extra_env=env
    )


def status(user_env: UserEnv) -> dict[str, Any]:
    return dict(json.loads(chctl(user_env, "status", "--json").stdout))


def server_row(user_env: UserEnv, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in status(user_env)["servers"] if s["name"] == name)
    return found


def idp_file(user_env: UserEnv) -> dict[str, Any]:
    return dict(json.loads((user_env.ch_home / "idps" / "corp.json").read_text()))


def test_one_sign_in_serves_two_servers_and_a_bridged_session_outlives_six_lifetimes(
    daemon: DaemonProcess, user_env: UserEnv, company: Company
) -> None:
    sign_in(user_env, company)
    first = add_app(user_env, "wiki", company.servers[0], "--bridge")
    assert first.returncode == 0, first.stderr
    assert "got a token for wiki (identity provider corp)" in first.stdout
    assert add_app(user_env, "tickets", company.servers[1]).returncode == 0  # header mode: no browser either
    listed = json.loads(chctl(user_env, "idp", "list", "--json").stdout)
    assert listed[0]["name"] == "corp" and listed[0]["state"] == "active" and listed[0]["subject"] == "alice"
    assert sorted(listed[0]["servers"]) == ["tickets", "wiki"]
    shown = chctl(user_env, "status").stdout
    assert "idp corp" in shown and "tickets, wiki" in shown  # which servers hang on which IdP

    # The server sees the user the IdP vouched for; every call over six lifetimes is answered.
    seen = asyncio.run(tokens_seen_over(user_env, "wiki", 6, LIFETIME_S, whoami="alice"))
    assert len(seen) >= 5, f"the server saw only {len(seen)} different tokens over six lifetimes"
    renewed = [e for e in daemon.log_events() if e.get("event") == "idp_refreshed"]
    assert len(renewed) >= 4, "the IdP's sign-in was not renewed ahead of its 4-second ID tokens"
    assert "invalid_grant" not in company.idp.log_path.read_text()  # no refresh token of the IdP used twice
    assert server_row(user_env, "tickets")["usable"]
    assert MCP_SECRET not in daemon.log()


def _notify_env(path: Path) -> dict[str, str]:
    record = (
        f"import os; open({str(path)!r}, 'a').write(os.environ['CH_SERVER'] + ' ' + os.environ['CH_STATE'] + '\\n')"
    )
    return {"CH_NOTIFY_COMMAND": json.dumps([sys.executable, "-c", record])}


def test_a_revoked_sign_in_is_told_once_every_server_names_chctl_idp_login_and_a_new_sign_in_mends_all(
    user_env: UserEnv, company: Company, mcp_api_key_server: McpApiKeyServerFactory, tmp_path: Path
) -> None:
    notified = tmp_path / "notified"
    daemon = DaemonProcess(user_env, extra_env=_notify_env(notified)).start()
    try:
        sign_in(user_env, company)
        assert add_app(user_env, "wiki", company.servers[0], "--bridge").returncode == 0
        assert add_app(user_env, "tickets", company.servers[1]).returncode == 0
        add_api_key_server(user_env, mcp_api_key_server())
        asyncio.run(company.idp.revoke(idp_file(user_env)["refresh_token"], "refresh_token"))  # the company withdrew it

        def both_wait() -> bool:
            rows = {s["name"]: s for s in status(user_env)["servers"]}
            return all(rows[n]["state"] == "needs_reauth" for n in ("wiki", "tickets"))

        wait_for(both_wait, 6 * LIFETIME_S, 0.2, "both servers to need the IdP's sign-in")
        for name in ("wiki", "tickets"):
            assert server_row(user_env, name)["fix"] == "chctl idp login corp"
        shown = chctl(user_env, "status").stdout
        assert (
            shown.count("needs login → chctl idp login corp") == 2 and "needs sign-in → chctl idp login corp" in shown
        )
        refused = chctl(user_env, "token", "tickets")
        assert refused.returncode == 1 and "chctl idp login corp" in refused.stderr
        assert server_row(user_env, "keyed")["usable"]  # the other server goes on
        wait_for(notified.exists, 15, what="the notify command")
        time.sleep(1)  # let a second notification (there must be none) show up if it were coming
        assert notified.read_text().splitlines() == ["idp:corp needs_reauth"]  # once, not once per server
        assert json.loads((user_env.ch_home / "tokens" / "wiki.json").read_text())["idp"] == "corp"  # nothing lost

        done = chctl(user_env, "idp", "login", "corp", extra_env={"BROWSER": browser_command()})
        assert done.returncode == 0, done.stderr
        assert "wiki gets its token" in done.stdout and "tickets gets its token" in done.stdout
        rows = {s["name"]: s for s in status(user_env)["servers"]}
        assert rows["wiki"]["state"] == "active" and rows["tickets"]["usable"]
    finally:
        daemon.stop()


def test_an_idp_that_is_down_gives_retrying_with_its_name_the_others_go_on_and_it_recovers_by_itself(
    user_env: UserEnv, steady_company: Company, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    company = steady_company
    daemon = DaemonProcess(
        user_env, extra_env={"CH_HTTP_TIMEOUT_S": "1", "CH_BACKOFF_BASE_S": "1", "CH_BACKOFF_MAX_S": "2"}
    )
    daemon.start()
    idp = company.idp._peer.process
    try:
        sign_in(user_env, company)
        assert add_app(user_env, "wiki", company.servers[0]).returncode == 0
        add_api_key_server(user_env, mcp_api_key_server())
        refresh_token = idp_file(user_env)["refresh_token"]
        os.kill(idp.pid, signal.SIGSTOP)  # the IdP hangs: connections are taken, never answered
        row = wait_for(
            lambda: (r := server_row(user_env, "wiki"))["state"] == "retrying" and r, 8 * LIFETIME_S, 0.2, "retrying"
        )
        assert "identity provider corp" in row["last_error"]
        idp_row = wait_for(
            lambda: (r := json.loads(chctl(user_env, "idp", "list", "--json").stdout)[0])["state"] == "retrying" and r,
            4 * LIFETIME_S,
            0.1,
            "the IdP's row to say retrying",
        )
        assert "did not answer" in idp_row["last_error"]
        assert server_row(user_env, "keyed")["usable"]  # the other server goes on
        assert idp_file(user_env)["refresh_token"] == refresh_token  # nothing lost: the sign-in is kept
        os.kill(idp.pid, signal.SIGCONT)
        wait_for(lambda: server_row(user_env, "wiki")["state"] == "active", 10 * LIFETIME_S, 0.2, "recovery")
        assert chctl(user_env, "token", "wiki").returncode == 0
    finally:
        os.kill(idp.pid, signal.SIGCONT)
        daemon.stop()


def test_an_id_token_on_stdin_signs_in_and_a_wrong_one_is_refused_before_anything_is_stored(
    daemon: DaemonProcess, user_env: UserEnv, company: Company
) -> None:
    added = chctl(user_env, "idp", "add", "corp", "--issuer", company.idp.issuer, "--client-id", IDP_CLIENT)
    assert added.returncode == 0, added.stderr
    pending = add_app(user_env, "wiki", company.servers[0])
    assert pending.returncode == 1 and "chctl idp login corp" in pending.stderr  # no sign-in yet: the fix is named
    assert server_row(user_env, "wiki")["fix"] == "chctl idp login corp"
    refused = chctl(user_env, "idp", "login", "corp", "--id-token", "-", input="not.a.jwt")
    assert refused.returncode == 1 and "error[INVALID_PARAMS]" in refused.stderr
    # A real ID token from the same IdP (what an SSO tool hands out): taken from stdin, and the server derives.
    other = chctl(user_env, "idp", "login", "corp", extra_env={"BROWSER": browser_command()})
    assert other.returncode == 0
    id_token = idp_file(user_env)["id_token"]
    again = chctl(user_env, "idp", "login", "corp", "--id-token", "-", input=id_token + "\n")
    assert again.returncode == 0, again.stderr
    assert "wiki gets its token from this sign-in" in again.stdout
    assert "refresh_token" not in idp_file(user_env)  # an ID token alone: used until it expires, then a new sign-in
    assert server_row(user_env, "wiki")["usable"]


def test_an_idp_that_hangs_past_the_deadline_then_answers_keeps_the_sign_in_its_refresh_token_sent_once(
    user_env: UserEnv, company: Company
) -> None:
    """The IdP rotates refresh tokens with reuse detection. While it hangs, the refresh past its deadline waits in
    its socket: the same refresh token sent again would be handled too once it runs again, and revoke the grant."""
    daemon = DaemonProcess(
        user_env, extra_env={"CH_HTTP_TIMEOUT_S": "1", "CH_BACKOFF_BASE_S": "1", "CH_BACKOFF_MAX_S": "2"}
    ).start()
    idp = company.idp._peer.process
    try:
        sign_in(user_env, company)
        assert add_app(user_env, "wiki", company.servers[0]).returncode == 0
        os.kill(idp.pid, signal.SIGSTOP)
        waiting = wait_for(
            lambda: "its answer is still awaited" in ((r := idp_list(user_env)[0])["last_error"] or "") and r,
            6 * LIFETIME_S,
            0.2,
            "the IdP's refresh to be awaited",
        )
        assert waiting["state"] == "retrying"
        unanswered = daemon.log().count("token_refresh_unanswered")
        retries = lambda: daemon.log().count("idp_refresh_failed_transient")  # noqa: E731
        before = retries()
        wait_for(lambda: retries() >= before + 2, 6 * LIFETIME_S, 0.2, "more attempts while the IdP hangs")
        assert daemon.log().count("token_refresh_unanswered") == unanswered  # none of them sent the token again
        idp_log_at = company.idp.log_path.stat().st_size
        renewed = daemon.log().count('"idp_refreshed"')
        os.kill(idp.pid, signal.SIGCONT)
        # The late answer is taken (its rotated refresh token stored), and the sign-in goes on being renewed.
        wait_for(lambda: daemon.log().count('"idp_refreshed"') >= renewed + 2, 6 * LIFETIME_S, 0.2, "renewals")
        assert "token_refresh_answered_late" in daemon.log()
        with company.idp.log_path.open("rb") as idp_log:
            idp_log.seek(idp_log_at)
            assert b"invalid_grant" not in idp_log.read()  # no refresh token was replayed: the grant stands
        assert asyncio.run(company.idp.is_active(idp_file(user_env)["refresh_token"]))
        assert idp_list(user_env)[0]["state"] == "active"
        wait_for(lambda: server_row(user_env, "wiki")["usable"], 6 * LIFETIME_S, 0.2, "wiki's token")
    finally:
        os.kill(idp.pid, signal.SIGCONT)
        daemon.stop()


def idp_list(user_env: UserEnv) -> list[dict[str, Any]]:
    return list(json.loads(chctl(user_env, "idp", "list", "--json").stdout))


def test_with_a_keychain_the_sign_in_and_the_derived_token_rest_there_and_migrate_both_ways(
    user_env: UserEnv, company: Company, keychain: SessionKeychain
) -> None:
    store = {**keychain.env(), "CH_SECRET_STORE": "keyring", "CH_HTTP_TIMEOUT_S": "2"}
    service = f"context-harness:{user_env.ch_home.resolve()}"

    def item(key: str) -> dict[str, Any]:
        return dict(json.loads(keychain.lookup(service, key) or "{}"))

    daemon = DaemonProcess(user_env, extra_env=store).start()
    idp = company.idp._peer.process
    try:
        sign_in(user_env, company)
        assert add_app(user_env, "wiki", company.servers[0], "--bridge").returncode == 0
        first, first_wiki = item("corp/idp"), item("wiki")
        assert first["id_token"] and first["refresh_token"] and first_wiki["access_token"]
        assert secret_is(first_wiki["client_secret"], MCP_SECRET)
        # Both renewed by themselves: the IdP's rotating refresh token, and the token derived from the new ID token.
        wait_for(lambda: item("corp/idp")["refresh_token"] != first["refresh_token"], 4 * LIFETIME_S, 0.2, "IdP")
        wait_for(lambda: item("wiki")["access_token"] != first_wiki["access_token"], 4 * LIFETIME_S, 0.2, "wiki")
        second, second_wiki = item("corp/idp"), item("wiki")
        values = [first[k] for k in ("id_token", "refresh_token", "access_token")]
        values += [second[k] for k in ("id_token", "refresh_token", "access_token")]
        values += [first_wiki["access_token"], second_wiki["access_token"], MCP_SECRET]
        assert files_holding(user_env.home, values) == []  # not the IdP's file, a token file, a config or a log
        assert "refresh_token" not in idp_file(user_env) and idp_file(user_env)["secret_ref"]["key"] == "corp/idp"
        assert [p["where"] for p in idp_list(user_env)[0]["secret_at"]] == ["keychain"]
        assert {(p["where"], p.get("of")) for p in server_row(user_env, "wiki")["secret_at"]} == {
            ("keychain", None),
            ("keychain", "idp"),
        }
        doctor = chctl(user_env, "doctor").stdout
        assert (
            "identity provider corp: secret in the keychain (" in doctor
            and "its sign-in at corp in the keychain (" in doctor
        )

        daemon.stop()  # a restart: the sign-in comes back from the keychain, and goes on being renewed
        daemon = DaemonProcess(user_env, extra_env=store).start()
        again = item("corp/idp")["refresh_token"]
        wait_for(lambda: item("corp/idp")["refresh_token"] != again, 4 * LIFETIME_S, 0.2, "a renewal after restart")
        wait_for(lambda: server_row(user_env, "wiki")["usable"], 4 * LIFETIME_S, 0.2, "wiki's token")

        # The IdP hangs: nothing is renewed while the secrets move (the refresh sent is awaited, not sent again).
        os.kill(idp.pid, signal.SIGSTOP)
        awaited = lambda: "its answer is still awaited" in (idp_list(user_env)[0]["last_error"] or "")  # noqa: E731
        wait_for(awaited, 6 * LIFETIME_S, 0.2, "the IdP's refresh to be awaited")
        kept = item("corp/idp")
        moved = json.loads(chctl(user_env, "secrets", "migrate", "--to", "file", "--json").stdout)["servers"]
        assert {(m["name"], m["outcome"]) for m in moved} == {("corp", "moved"), ("wiki", "moved")}
        assert item("corp/idp") == {} and item("wiki") == {}
        assert secret_is(idp_file(user_env)["refresh_token"], kept["refresh_token"]) and "secret_ref" not in idp_file(
            user_env
        )
        assert [p["where"] for p in idp_list(user_env)[0]["secret_at"]] == ["idp_file"]
        back = json.loads(chctl(user_env, "secrets", "migrate", "--to", "keyring", "--json").stdout)["servers"]
        assert {(m["name"], m["outcome"]) for m in back} == {("corp", "moved"), ("wiki", "moved")}
        assert secret_is(item("corp/idp")["refresh_token"], kept["refresh_token"])
        assert "refresh_token" not in idp_file(user_env) and "secret_ref" in idp_file(user_env)
    finally:
        daemon.stop()
        os.kill(idp.pid, signal.SIGCONT)


def secret_is(found: Any, expected: Any) -> bool:
    """Equality that keeps both values out of pytest's report (they are secrets)."""
    if found != expected:
        raise AssertionError("not the expected value (not shown: a secret)")
    return True
