"""Attacks from a hostile or broken authorization server, against the real daemon.

A fake authorization server (tests/oauth_fakes.py) issues what it likes; the daemon logs in and refreshes
through its RPC, exactly as `chctl auth` and the refresher do. After each attack: nothing hostile is
written, no secret is sent, and the daemon still serves.
"""

from __future__ import annotations

import json
import time

from context_harness.stores.bindings import Binding, BindingStore
from tests.oauth_fakes import FakeWorld, running_world
from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv
from tests.support.login import call, login

OTHER_SECRET = "sk-ant-the-users-other-secret"


def header_of(user_env: UserEnv, name: str = "srv") -> str | None:
    entry = json.loads((user_env.project / "opencode.json").read_text())["mcp"][name]
    return entry.get("headers", {}).get("Authorization")


def stored_text(user_env: UserEnv, name: str = "srv") -> str:
    path = user_env.ch_home / "tokens" / f"{name}.json"
    return path.read_text() if path.exists() else ""


async def still_serving(user_env: UserEnv) -> None:
    assert (await call(user_env, "daemon.status"))["result"]["pid"] > 0


# What opencode, Claude Code/Cursor/VS Code and Gemini CLI would substitute, and what would split a request.
HOSTILE_TOKENS = [
    "{env:ANTHROPIC_API_KEY}",
    "{file:~/.context-harness/secrets/other.token}",
    "${ANTHROPIC_API_KEY}",
    "$GEMINI_API_KEY",
    "abc\r\nX-Evil: 1",
    "two words",
]
# Real shapes that must pass: Cloudflare workers-oauth-provider's `userId:grantId:secret`, a JWT, RFC 6749 VSCHARs.
ODD_BUT_VALID_TOKENS = [
    "user-42:grant-7Qh2:Xk3bq9ZsT1mN0pLw",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    "a!\"#%&'()*,;<>?@[]^`|~\\",
]


async def test_a_login_token_that_is_config_syntax_is_refused_and_never_written(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    for hostile in HOSTILE_TOKENS:
        async with running_world(FakeWorld(access_token_value=hostile)) as world:
            reply = await login(user_env, world)
        assert reply["error"]["data"]["code"] == "OAUTH_ERROR", reply
        assert "revoked at the server" in reply["error"]["message"], reply
        assert world.revoked == list(reversed(world.issued_tokens))  # refresh token (the grant) first
        assert header_of(user_env) is None
        assert hostile not in stored_text(user_env)
        assert hostile not in (user_env.project / "opencode.json").read_text()
        assert hostile not in daemon.log()
    await still_serving(user_env)


async def test_a_refreshed_token_that_is_config_syntax_is_refused_and_the_old_header_stays(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async with running_world(FakeWorld()) as world:
        assert "result" in await login(user_env, world)
        good = header_of(user_env)
        assert good is not None and good.startswith("Bearer ")
        assert (user_env.project / "opencode.json").stat().st_mode & 0o777 == 0o600  # it holds a token now
        for hostile in HOSTILE_TOKENS:
            world.access_token_value = hostile
            reply = await call(user_env, "token.refresh", name="srv")
            assert "error" in reply, reply
            assert world.revoked[-2:] == list(reversed(world.issued_tokens[-2:]))
            assert header_of(user_env) == good
            assert hostile not in stored_text(user_env)
            assert hostile not in daemon.log()
    await still_serving(user_env)


async def test_a_token_of_any_visible_ascii_logs_in_and_refreshes(daemon: DaemonProcess, user_env: UserEnv) -> None:
    for i, token in enumerate(ODD_BUT_VALID_TOKENS):
        name = f"srv{i}"  # each world is another server: a credential stays with the URL it was recorded for
        async with running_world(FakeWorld(access_token_value=token)) as world:
            assert "result" in await login(user_env, world, name)
            assert header_of(user_env, name) == f"Bearer {token}"
            assert "result" in await call(user_env, "token.refresh", name=name)
            assert header_of(user_env, name) == f"Bearer {token}"
            assert world.revoked == []
    await still_serving(user_env)


async def test_an_api_key_or_header_that_is_config_syntax_is_refused(daemon: DaemonProcess, user_env: UserEnv) -> None:
    config = user_env.project / "opencode.json"
    config.write_text('{"mcp": {}}\n')
    base = {"cwd": str(user_env.project), "name": "docs", "url": "https://mcp.example/mcp"}
    for extra in (
        {"api_key": "{env:ANTHROPIC_API_KEY}"},
        {"api_key": "{file:~/.ssh/id_ed25519}"},
        {"api_key": "k-1\r\nX-Evil: 1"},
        {"headers": {"X-Team": "{env:" + "AWS_SECRET_ACCESS_KEY}"}},
        {"headers": {"X-Team": "a\nb"}},
        {"headers": {"X-Team\r\nEvil": "v"}},
        {"api_key": "k-1", "key_header": "X-Key\n"},
    ):
        reply = await call(user_env, "mcp.add", **base, **extra)
        assert reply["error"]["data"]["code"] == "INVALID_PARAMS", (extra, reply)
    assert config.read_text() == '{"mcp": {}}\n'
    assert stored_text(user_env, "docs") == ""
    await still_serving(user_env)


# --- numbers from servers are clamped ---------------------------------------------------------------------

YEAR_S = 365 * 24 * 3600


async def test_an_absurd_lifetime_is_clamped_and_every_later_start_still_serves(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env).start()
    try:
        async with running_world(FakeWorld(access_token_lifetime=1e300)) as world:
            reply = await login(user_env, world)
        assert "result" in reply, reply
        assert reply["result"]["expires_at"] <= time.time() + YEAR_S
    finally:
        process.stop()
    restarted = DaemonProcess(user_env).start()  # today: the scheduler crashed here on every start
    try:
        row = (await call(user_env, "status"))["result"]["servers"][0]
        assert row["name"] == "srv" and row["next_refresh_at"] is not None
    finally:
        restarted.stop()


def _token_file(user_env: UserEnv, name: str, expires_at: float) -> None:
    tokens = user_env.ch_home / "tokens"
    tokens.mkdir(parents=True, mode=0o700, exist_ok=True)
    credential = {
        "name": name,
        "kind": "oauth",
        "state": "active",
        "tokens": {
            "access_token": f"at-{name}",
            "refresh_token": f"rt-{name}",
            "expires_at": expires_at,
            "issued_at": time.time(),
        },
        "token_endpoint": "http://127.0.0.1:9/token",
        "client_id": "c",
    }
    (tokens / f"{name}.json").write_text(json.dumps(credential))
    (tokens / f"{name}.json").chmod(0o600)


async def test_a_token_file_with_an_absurd_expiry_does_not_stop_the_daemon_or_the_other_servers(
    user_env: UserEnv,
) -> None:
    user_env.ch_home.mkdir(mode=0o700)
    _token_file(user_env, "aaa-old", 1e300)  # written by a version that did not clamp
    _token_file(user_env, "zzz-good", time.time() + 3600)
    # Both carried by a config: the daemon refreshes only servers some config still uses.
    config = user_env.project / "opencode.json"
    remote = {"type": "remote", "url": "http://127.0.0.1:9/mcp", "oauth": False}
    config.write_text(json.dumps({"mcp": {"aaa-old": remote, "zzz-good": remote}}))
    for name in ("aaa-old", "zzz-good"):
        BindingStore(user_env.ch_home / "bindings.json").bind(name, Binding(path=str(config.resolve())))
    process = DaemonProcess(user_env).start()
    try:
        rows = {r["name"]: r for r in (await call(user_env, "status"))["result"]["servers"]}
        assert rows["zzz-good"]["next_refresh_at"] is not None
        assert rows["aaa-old"]["next_refresh_at"] is not None
        assert rows["aaa-old"]["next_refresh_at"] <= time.time() + YEAR_S
    finally:
        process.stop()


async def test_a_one_second_lifetime_does_not_make_the_daemon_hammer_the_server(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env, extra_env={"CH_MIN_REFRESH_SPACING_S": "10"}).start()  # the default
    try:
        async with running_world(FakeWorld(access_token_lifetime=1)) as world:
            before = time.time()
            reply = await login(user_env, world)
            assert "result" in reply, reply
            assert reply["result"]["next_refresh_at"] >= before + 10
            assert [f["grant_type"] for f in world.token_forms] == ["authorization_code"]
        await still_serving(user_env)
    finally:
        process.stop()


async def test_an_api_key_for_a_remote_plain_http_server_is_refused(daemon: DaemonProcess, user_env: UserEnv) -> None:
    config = user_env.project / "opencode.json"
    config.write_text('{"mcp": {}}\n')
    reply = await call(
        user_env, "mcp.add", cwd=str(user_env.project), name="docs", url="http://mcp.example/mcp", api_key="k-1"
    )
    assert reply["error"]["data"]["code"] == "INVALID_PARAMS", reply
    assert "clear text" in reply["error"]["message"] and "k-1" not in json.dumps(reply)
    assert config.read_text() == '{"mcp": {}}\n' and stored_text(user_env, "docs") == ""
