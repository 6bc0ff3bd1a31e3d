"""Login, refresh, restart and logout against Cloudflare's workers-oauth-provider under `wrangler dev`, with the
real daemon and chctl. Its tokens are `userId:grantId:secret`: a colon is visible ASCII, allowed in an access
token, and the Worker gets them exactly as issued."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.peers.fake_browser import browser_command
from tests.peers.workers_oauth import ACCESS_TOKEN_TTL_S, WorkersOAuthWorker
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.opencode import mcp_list
from tests.test_e2e_oauth import assert_no_secret, call_whoami, header_of, stored
from tests.test_refresh_e2e import initialize_status

# The refresher renews at this fraction of the lifetime: ~6 s into a 60 s token instead of 45 s.
FAST_REFRESH = {"CH_REFRESH_FRACTION": "0.1"}
REFRESH_DEADLINE_S = ACCESS_TOKEN_TTL_S  # a refresh is due at ~6 s; the whole lifetime is the generous bound


def log_in(user_env: UserEnv, worker: WorkersOAuthWorker) -> dict[str, str]:
    """`chctl add` + `chctl auth` as a user runs them; the tokens the daemon stored."""
    assert chctl(user_env, "init").returncode == 0
    added = chctl(user_env, "add", "srv", "--url", worker.mcp_url)
    assert added.returncode == 0, added.stderr
    done = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr
    tokens: dict[str, str] = stored(user_env)["tokens"]
    return tokens


def assert_works(user_env: UserEnv, worker: WorkersOAuthWorker) -> str:
    """opencode.json carries the stored colon token as it is, and the Worker's MCP endpoint accepts that header."""
    access_token = stored(user_env)["tokens"]["access_token"]
    assert access_token.startswith("alice:") and access_token.count(":") == 2  # userId:grantId:secret
    header = header_of(user_env)
    assert header == "Bearer " + access_token
    assert asyncio.run(call_whoami(worker.mcp_url, header)) == "alice"
    return access_token


def refreshed_by_the_daemon(user_env: UserEnv, before: str) -> str:
    def new_token() -> str | None:
        token: str = stored(user_env)["tokens"]["access_token"]
        return token if token != before else None

    token: str = wait_for(new_token, REFRESH_DEADLINE_S, interval_s=0.2, what="the refresher's new token")
    # The config is written right after the token is saved: wait for it rather than race it.
    wait_for(lambda: header_of(user_env) == "Bearer " + token, 10, interval_s=0.1, what="the header")
    return token


@pytest.fixture
def fast_daemon(user_env: UserEnv) -> Iterator[DaemonProcess]:
    process = DaemonProcess(user_env, extra_env=FAST_REFRESH).start()
    yield process
    process.stop()


def test_login_writes_the_colon_token_and_the_worker_accepts_it(
    daemon: DaemonProcess, user_env: UserEnv, workers_oauth_worker: WorkersOAuthWorker
) -> None:
    tokens = log_in(user_env, workers_oauth_worker)
    assert tokens["refresh_token"].startswith("alice:")
    assert_works(user_env, workers_oauth_worker)
    assert mcp_list(user_env) == {"srv": "connected"}  # the real opencode sends the colon token as it is
    assert stored(user_env)["issuer"] == workers_oauth_worker.origin
    status = chctl(user_env, "auth", "srv", "--status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "active"
    assert_no_secret(daemon.log(), user_env)
    assert asyncio.run(workers_oauth_worker.grant_count("alice")) >= 1  # the grant the next test sees revoked


def test_a_token_a_client_would_substitute_is_refused_and_its_grant_revoked(
    daemon: DaemonProcess, user_env: UserEnv, workers_oauth_worker: WorkersOAuthWorker
) -> None:
    # The Worker names the user `${HOME}`: its tokens are `${HOME}:grantId:secret`, which Claude Code, Cursor
    # and VS Code would expand in their configs. Refused, and the grant just issued does not stay live.
    user = "${HOME}"
    asyncio.run(workers_oauth_worker.set_next_user(user))
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "srv", "--url", workers_oauth_worker.mcp_url).returncode == 0
    done = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    assert done.returncode != 0 and "error[OAUTH_ERROR]" in done.stderr
    assert asyncio.run(workers_oauth_worker.grant_count(user)) == 0, "the refused grant is still live at the Worker"
    assert "revoked at the server" in done.stderr
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    config = json.loads((user_env.project / "opencode.json").read_text())
    assert "headers" not in config["mcp"]["srv"]


def test_refresh_gives_a_new_colon_token_that_works(
    fast_daemon: DaemonProcess, user_env: UserEnv, workers_oauth_worker: WorkersOAuthWorker
) -> None:
    first = log_in(user_env, workers_oauth_worker)
    assert_works(user_env, workers_oauth_worker)
    # The refresher, on its own schedule.
    refreshed_by_the_daemon(user_env, first["access_token"])
    second = stored(user_env)["tokens"]
    assert second["refresh_token"] != first["refresh_token"]  # the library rotates refresh tokens
    assert_works(user_env, workers_oauth_worker)
    # And on demand.
    done = chctl(user_env, "refresh", "srv")
    assert done.returncode == 0, done.stderr
    third = stored(user_env)["tokens"]
    assert third["access_token"] != second["access_token"] and third["refresh_token"] != second["refresh_token"]
    assert_works(user_env, workers_oauth_worker)
    assert_no_secret(fast_daemon.log() + done.stdout + done.stderr, user_env)


def test_a_restarted_daemon_and_worker_keep_the_login(
    user_env: UserEnv, workers_oauth_worker: WorkersOAuthWorker
) -> None:
    process = DaemonProcess(user_env).start()
    try:
        log_in(user_env, workers_oauth_worker)
    finally:
        process.stop()
    before = assert_works(user_env, workers_oauth_worker)
    workers_oauth_worker.restart()  # the same port and KV directory: every grant survives
    assert_works(user_env, workers_oauth_worker)

    process = DaemonProcess(user_env, extra_env=FAST_REFRESH).start()  # reads the colon tokens back from disk
    try:
        status = chctl(user_env, "auth", "srv", "--status", "--json")
        # A loaded machine may take long enough over the restarts that the fast plan's refresh is already under
        # way: the login read back from disk is usable either way (exit 0), which is what this checks.
        assert status.returncode == 0 and json.loads(status.stdout)["state"] in ("active", "refreshing")
        refreshed_by_the_daemon(user_env, before)
        assert_works(user_env, workers_oauth_worker)
    finally:
        process.stop()


def test_logout_revokes_the_grant_at_the_worker(
    daemon: DaemonProcess, user_env: UserEnv, workers_oauth_worker: WorkersOAuthWorker
) -> None:
    log_in(user_env, workers_oauth_worker)
    access_token = assert_works(user_env, workers_oauth_worker)
    credential = stored(user_env)
    done = chctl(user_env, "auth", "srv", "--logout")
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    config = json.loads((user_env.project / "opencode.json").read_text())
    assert "headers" not in config["mcp"]["srv"]
    # The token the config held a moment ago is dead at the Worker.
    assert asyncio.run(initialize_status(workers_oauth_worker.mcp_url, "Bearer " + access_token)) == 401
    # So is the refresh token: the grant is gone (invalid_grant, not invalid_client: the client did authenticate).
    assert asyncio.run(refresh_error(credential)) == "invalid_grant"


async def refresh_error(credential: dict[str, Any]) -> str:
    """The OAuth error the token endpoint answers a refresh with, authenticating the client as it registered."""
    form = {"grant_type": "refresh_token", "refresh_token": credential["tokens"]["refresh_token"]}
    method, client = (
        credential["token_endpoint_auth_method"],
        (credential["client_id"], credential.get("client_secret", "")),
    )
    headers = {}
    if method == "client_secret_basic":
        headers["Authorization"] = aiohttp.BasicAuth(*client).encode()
    else:
        form |= {"client_id": client[0]} | ({"client_secret": client[1]} if method == "client_secret_post" else {})
    async with (
        aiohttp.ClientSession() as http,
        http.post(credential["token_endpoint"], data=form, headers=headers) as answer,
    ):
        assert answer.status == 400
        body: dict[str, Any] = await answer.json()
    return str(body["error"])
