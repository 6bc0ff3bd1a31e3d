"""`chctl import` as a door for outside values: a planted mcp-auth.json is input, checked at the same gate as a
login. Each test is the attack; our own aiohttp authorization server (tests/oauth_fakes.py) records what reaches it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tests.oauth_fakes import FakeWorld, running_world
from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv
from tests.support.login import call

REFRESH_SECRET = "rt-the-users-real-refresh-token"


def plant(user_env: UserEnv, logins: dict[str, Any]) -> Path:
    path = user_env.home / "planted-mcp-auth.json"
    path.write_text(json.dumps(logins))
    return path


def held(server_url: str | None, access: str = "at-fine-4711", expires_at: float | None = None) -> dict[str, Any]:
    login: dict[str, Any] = {
        "tokens": {
            "accessToken": access,
            "refreshToken": REFRESH_SECRET,
            "expiresAt": expires_at or time.time() + 3600,
        },
        "clientInfo": {"clientId": "client-1"},
    }
    if server_url is not None:
        login["serverUrl"] = server_url
    return login


async def import_from(user_env: UserEnv, path: Path) -> dict[str, dict[str, Any]]:
    reply = await call(user_env, "auth.import", cwd=str(user_env.project), source="opencode", path=str(path))
    assert "result" in reply, reply
    return {row["name"]: row for row in reply["result"]["servers"]}


def config_text(user_env: UserEnv) -> str:
    return (user_env.project / "opencode.json").read_text()


async def test_an_imported_token_or_url_a_client_would_substitute_is_skipped_and_never_written(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    (user_env.project / "opencode.json").write_text('{"mcp": {}}\n')
    async with running_world(FakeWorld()) as world, running_world(FakeWorld()) as planted:
        hostile_url = planted.server_url + "?k={env:ANTHROPIC_API_KEY}"
        planted.resource_override = hostile_url  # the planted server agrees with the planted URL
        logins = {
            "tok": held(world.server_url, access="{env:ANTHROPIC_API_KEY}"),
            "url": held(hostile_url),
            "dollar": held(world.server_url, access="${GITHUB_TOKEN}"),
        }
        rows = await import_from(user_env, plant(user_env, logins))
    for name in ("tok", "url", "dollar"):
        assert rows[name]["outcome"] == "skipped", rows[name]
        assert "substitute" in rows[name]["reason"], rows[name]
        assert not (user_env.ch_home / "tokens" / f"{name}.json").exists()
    assert "{env:" not in config_text(user_env) and "${" not in config_text(user_env)
    assert "ANTHROPIC_API_KEY" not in daemon.log()


async def test_an_imported_login_without_its_server_url_never_sends_its_refresh_token_anywhere(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async with running_world(FakeWorld()) as world:
        # A pulled project config points `srv` at a server of someone else's choosing.
        (user_env.project / "opencode.json").write_text(
            json.dumps({"mcp": {"srv": {"type": "remote", "url": world.server_url}}})
        )
        rows = await import_from(user_env, plant(user_env, {"srv": held(None, expires_at=time.time() - 60)}))
        assert world.token_forms == []  # the real refresh token went nowhere
    assert rows["srv"]["outcome"] == "skipped" and "serverUrl" in rows["srv"]["reason"], rows["srv"]
    assert not (user_env.ch_home / "tokens" / "srv.json").exists()
    assert REFRESH_SECRET not in daemon.log()


async def test_a_login_under_a_name_that_is_not_a_server_name_is_skipped_and_the_others_import(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    (user_env.project / "opencode.json").write_text('{"mcp": {}}\n')
    async with running_world(FakeWorld()) as world:
        logins = {
            "../../evil": held(world.server_url),
            "two words": held(world.server_url),
            "good": held(world.server_url),
        }
        rows = await import_from(user_env, plant(user_env, logins))
    assert rows["good"]["outcome"] == "adopted", rows["good"]
    for bad in ("../../evil", "two words"):
        assert rows[bad]["outcome"] == "skipped" and "not a server name" in rows[bad]["reason"], rows[bad]
    assert json.loads(config_text(user_env))["mcp"].keys() == {"good"}
    assert not (user_env.home / "evil.json").exists()


async def test_a_planted_file_no_login_file_is_like_is_refused_and_the_daemon_keeps_answering(
    user_env: UserEnv,
) -> None:
    (user_env.project / "opencode.json").write_text('{"mcp": {}}\n')
    huge = user_env.home / "huge-mcp-auth.json"
    huge.write_bytes(b'{"srv": ' + b" " * (2 * 1024 * 1024) + b"{}}")  # login files are a few KiB
    fifo = user_env.home / "fifo-mcp-auth.json"
    os.mkfifo(fifo)  # a read that never ends, as on a hung mount
    process = DaemonProcess(user_env, extra_env={"CH_CONFIG_IO_TIMEOUT_S": "1"}).start()
    try:
        reply = await call(user_env, "auth.import", cwd=str(user_env.project), source="opencode", path=str(huge))
        assert reply["error"]["data"]["code"] == "CONFIG_INVALID", reply
        assert "larger than any login file" in reply["error"]["message"]
        reply = await call(user_env, "auth.import", cwd=str(user_env.project), source="opencode", path=str(fifo))
        assert reply["error"]["data"]["code"] == "TIMEOUT", reply
        assert "result" in await call(user_env, "status")  # the daemon's loop never waited for the file
    finally:
        with contextlib.suppress(OSError):  # let the stuck read end: a writer that closes at once
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        process.stop()
