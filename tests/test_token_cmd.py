"""`chctl token NAME`: the credential that is valid now, for any program — against the real daemon, oidc-provider
issuing short-lived tokens, MCP SDK servers that check the token, and curl."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from context_harness.api import ensure_valid_token, get_bearer_token
from context_harness.oauth.discovery import initialize_request
from context_harness.primitives.result import ErrorCode, Failure, Success
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcConfig, OidcProvider, OidcProviderFactory, start_oidc_provider
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.test_refresh_e2e import short_lived  # noqa: F401 (a fixture: 4 s tokens)


def log_in(user_env: UserEnv, server: McpOAuthServer, name: str = "srv") -> None:
    chctl(user_env, "init")
    done = chctl(user_env, "add", name, "--url", server.url)
    assert done.returncode == 0, done.stderr
    done = chctl(user_env, "auth", name, extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr


def stored(user_env: UserEnv, name: str = "srv") -> dict[str, Any]:
    tokens: dict[str, Any] = json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())["tokens"]
    return tokens


def refreshes(daemon: DaemonProcess, name: str = "srv") -> int:
    return sum(1 for e in daemon.log_events() if e.get("event") == "token_refreshed" and e.get("server") == name)


def test_a_4_second_token_read_every_500_ms_for_20_s_is_always_active_at_the_authorization_server(
    daemon: DaemonProcess, user_env: UserEnv, request: pytest.FixtureRequest
) -> None:
    provider, server = request.getfixturevalue("short_lived")  # test_refresh_e2e's: 4 s tokens
    log_in(user_env, server)

    async def read_for(seconds: float) -> tuple[int, set[str], list[str]]:
        reads, seen, dead = 0, set(), []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done = chctl(user_env, "token", "srv")
            assert done.returncode == 0, done.stderr
            token = done.stdout.removesuffix("\n")
            assert token and "\n" not in token
            if not await provider.is_active(token):
                dead.append(f"at {seconds - (deadline - time.monotonic()):.2f}s")
            reads += 1
            seen.add(token)
            await asyncio.sleep(0.5)
        return reads, seen, dead

    reads, seen, dead = asyncio.run(read_for(20))
    assert dead == [], f"chctl token printed a dead token {len(dead)} times of {reads}: {dead}"
    assert reads >= 15  # every 500 ms, plus chctl's own time on a loaded machine
    assert len(seen) >= 4  # it went through several refreshes
    assert asyncio.run(initialize_status(server.url, "Bearer " + chctl(user_env, "token", "srv").stdout.strip())) == 200
    row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert row["token_reads"] == reads + 1 and row["last_token_read_at"] is not None


# chctl, imported and waiting: it runs `chctl ARGS` when its stdin closes.
RELEASED_BY_STDIN = (
    "import sys\n"
    "from context_harness.client import chctl\n"
    "print('ready', file=sys.stderr, flush=True)\n"
    "sys.stdin.read()\n"
    "sys.exit(chctl.main(sys.argv[1:]))\n"
)


def test_20_concurrent_reads_while_a_refresh_is_due_make_exactly_one_refresh(
    user_env: UserEnv, oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> None:
    # 10 s tokens from a token endpoint that takes 1 s to answer: the refresh is in flight while all 20 arrive.
    provider = oidc_provider_factory(access_token_ttl=10, token_delay_ms=1000)
    server = mcp_oauth_server_factory(provider)
    # The refresher's own plan comes late (95 % of the lifetime): the reads below find the token due first.
    daemon = DaemonProcess(user_env, extra_env={"CH_REFRESH_FRACTION": "0.95", "CH_REFRESH_JITTER": "0"}).start()
    try:
        log_in(user_env, server)
        first = stored(user_env)
        # Twenty chctl processes, each started and imported, then released at once once the token is due: their
        # requests reach the daemon while the first refresh is still in flight.
        calls = [
            subprocess.Popen(
                [sys.executable, "-c", RELEASED_BY_STDIN, "token", "srv"],
                env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(20)
        ]
        for call in calls:
            assert call.stderr is not None and call.stderr.readline() == "ready\n"
        # Due for a caller once less than half its lifetime (5 s of 10 s) is left.
        wait_for(lambda: time.time() > first["expires_at"] - 4.5, 10, interval_s=0.05, what="the token to be due")
        before = refreshes(daemon)
        for call in calls:
            assert call.stdin is not None
            call.stdin.close()
        outputs = [(call.stdout.read(), call.stderr.read()) for call in calls if call.stdout and call.stderr]
        for call in calls:
            call.wait(60)
        assert all(call.returncode == 0 for call in calls), [err for _out, err in outputs]
        printed = {out.strip() for out, _err in outputs}
        assert printed == {stored(user_env)["access_token"]}  # one token for all: the refreshed one
        assert first["access_token"] not in printed
        assert refreshes(daemon) - before == 1
        assert asyncio.run(provider.is_active(printed.pop()))
        reads = [e for e in daemon.log_events() if e.get("event") == "token_read"]
        assert {e["caller_pid"] for e in reads} == {call.pid for call in calls}  # who read it, for the log
        assert sum(1 for e in reads if e["refreshed"]) == 1
        assert first["access_token"] not in daemon.log() and stored(user_env)["access_token"] not in daemon.log()
    finally:
        daemon.stop()


async def initialize_status(url: str, authorization: str) -> int:
    import aiohttp

    headers = {"Accept": "application/json, text/event-stream", "Authorization": authorization}
    async with aiohttp.ClientSession() as session, session.post(url, json=initialize_request(), headers=headers) as r:
        return r.status


def curl_initialize(user_env: UserEnv, url: str, name: str) -> str:
    """curl, as a user types it, with `-H "$(chctl token NAME --header)"`: the HTTP status of an MCP initialize."""
    command = (
        f'curl -s -o /dev/null -w "%{{http_code}}" -X POST -H "$(chctl token {name} --header)" '
        "-H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' "
        f"--data {shlex.quote(json.dumps(initialize_request()))} {shlex.quote(url)}"
    )
    done = subprocess.run(
        ["sh", "-c", command], env={**user_env.vars(), "CH_NO_AUTOSTART": "1"}, capture_output=True, text=True
    )
    return done.stdout


def test_curl_with_the_header_reaches_mcp_servers_that_check_the_token_and_the_key(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_oauth_server: McpOAuthServer,
    mcp_api_key_server: McpApiKeyServerFactory,
) -> None:
    log_in(user_env, mcp_oauth_server)
    assert curl_initialize(user_env, mcp_oauth_server.url, "srv") == "200"
    header = chctl(user_env, "token", "srv", "--header").stdout
    assert header == f"Authorization: Bearer {stored(user_env)['access_token']}\n"

    keyed = mcp_api_key_server(header="X-Api-Key")
    done = chctl(user_env, "add", "keyed", "--url", keyed.url, "--key-header", keyed.header, "-k", keyed.key)
    assert done.returncode == 0, done.stderr
    assert curl_initialize(user_env, keyed.url, "keyed") == "200"
    # The server's own header name and no scheme, in the shape Claude Code's headersHelper reads.
    assert json.loads(chctl(user_env, "token", "keyed", "--json").stdout) == {"X-Api-Key": keyed.key}
    assert chctl(user_env, "token", "keyed").stdout == keyed.key + "\n"
    assert json.loads(chctl(user_env, "token", "srv", "--json").stdout) == {
        "Authorization": f"Bearer {stored(user_env)['access_token']}"
    }
    assert curl_initialize(user_env, keyed.url, "srv") == "401"  # the server does check


def test_a_server_that_needs_a_login_prints_nothing_on_stdout_and_exits_non_zero(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer, oidc_provider: OidcProvider
) -> None:
    chctl(user_env, "init")
    assert chctl(user_env, "add", "srv", "--url", mcp_oauth_server.url).returncode == 0
    for form in ((), ("--json",), ("--header",), ("--min-valid", "0")):
        done = chctl(user_env, "token", "srv", *form)
        assert done.returncode != 0 and done.stdout == ""
        assert "error[AUTH_REQUIRED]" in done.stderr and "chctl auth srv" in done.stderr
    unknown = chctl(user_env, "token", "nope")
    assert unknown.returncode != 0 and unknown.stdout == "" and "error[NOT_FOUND]" in unknown.stderr

    # A login the authorization server withdrew: the refresh is refused, and so is the token.
    assert chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()}).returncode == 0
    asyncio.run(oidc_provider.revoke(stored(user_env)["refresh_token"], "refresh_token"))
    chctl(user_env, "refresh", "srv")  # invalid_grant: needs_reauth
    done = chctl(user_env, "token", "srv", "--json")
    assert done.returncode != 0 and done.stdout == ""
    assert "error[AUTH_REQUIRED]" in done.stderr and "chctl auth srv" in done.stderr
    refused = [e for e in daemon.log_events() if e.get("event") == "token_read_refused"]
    assert refused and all(e["caller_pid"] for e in refused)
    assert json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]["token_reads"] == 0


def keyed_for_the_api(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory, monkeypatch: pytest.MonkeyPatch
) -> McpApiKeyServer:
    """An API-key server added as `keyed`, and this process's environment pointed at the test daemon."""
    keyed = mcp_api_key_server(header="X-Api-Key")
    chctl(user_env, "init")
    done = chctl(user_env, "add", "keyed", "--url", keyed.url, "--key-header", keyed.header, "-k", keyed.key)
    assert done.returncode == 0, done.stderr
    for variable in ("CH_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(variable, user_env.vars()[variable])
    monkeypatch.delenv("CH_SOCKET", raising=False)
    monkeypatch.setenv("CH_NO_AUTOSTART", "1")
    return keyed


def test_the_python_api_answers_with_results_over_the_same_rpc(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyed = keyed_for_the_api(user_env, mcp_api_key_server, monkeypatch)

    assert get_bearer_token("keyed") == Success(keyed.key)
    valid = ensure_valid_token("keyed", min_valid_s=0)
    assert isinstance(valid, Success)
    assert valid.value.headers == {"X-Api-Key": keyed.key} and valid.value.expires_at is None
    assert keyed.key not in repr(valid.value)  # a ValidToken printed by accident shows no secret
    missing = get_bearer_token("nope")
    assert isinstance(missing, Failure) and missing.code is ErrorCode.NOT_FOUND and missing.hint
    row = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert row["name"] == "keyed" and row["token_reads"] == 2


def test_the_python_api_hands_out_nothing_for_a_url_other_than_the_recorded_one(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Python headersHelper for Claude Code: a pulled `.mcp.json` points the entry at another host, and Claude
    says so in CLAUDE_CODE_MCP_SERVER_URL, as it does for `chctl token`."""
    keyed = keyed_for_the_api(user_env, mcp_api_key_server, monkeypatch)
    attacker = "https://mcp.attacker.example/mcp"

    monkeypatch.setenv("CLAUDE_CODE_MCP_SERVER_URL", attacker)
    refused = get_bearer_token("keyed")
    assert isinstance(refused, Failure), "the credential was handed out"
    assert refused.code is ErrorCode.INVALID_PARAMS
    assert "mcp.attacker.example/mcp" in refused.error and refused.hint and "chctl add keyed" in refused.hint
    monkeypatch.setenv("CLAUDE_CODE_MCP_SERVER_URL", keyed.url)
    assert get_bearer_token("keyed") == Success(keyed.key)
    assert isinstance(ensure_valid_token("keyed", for_url=attacker), Failure)  # given, it wins over the variable
    monkeypatch.delenv("CLAUDE_CODE_MCP_SERVER_URL")
    assert get_bearer_token("keyed", for_url=keyed.url) == Success(keyed.key)
    assert keyed.key not in daemon.log()


def test_an_unreachable_authorization_server_gets_the_current_token_while_it_lasts_then_token_expired(
    daemon: DaemonProcess, user_env: UserEnv, tmp_path: Path, mcp_oauth_server_factory: McpOAuthServerFactory
) -> None:
    # A provider of its own, stopped halfway: every refresh then fails with a refused connection.
    provider = start_oidc_provider(OidcConfig(access_token_ttl=20), tmp_path / "oidc-provider.log")
    try:
        log_in(user_env, mcp_oauth_server_factory(provider))
    finally:
        provider.stop()
    first = stored(user_env)
    # Due (less than half of 20 s left) but valid: the refresh fails, and the token that is still valid is printed.
    wait_for(lambda: time.time() > first["expires_at"] - 8, 20, interval_s=0.05, what="the token to be due")
    done = chctl(user_env, "token", "srv")
    assert done.returncode == 0, done.stderr
    assert done.stdout == first["access_token"] + "\n"
    wait_for(lambda: time.time() > first["expires_at"] + 0.5, 20, interval_s=0.05, what="the token to expire")
    done = chctl(user_env, "token", "srv", "--header")
    assert done.returncode != 0 and done.stdout == ""
    assert "error[TOKEN_EXPIRED]" in done.stderr and "chctl status" in done.stderr
