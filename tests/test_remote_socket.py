"""The restricted `remote.sock` beside `chd.sock`, `chctl share`/`unshare` and `chctl remote ssh-config`,
with the real daemon and chctl (the SSH forwarding itself: tests/test_remote_ssh.py)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl, rpc, socket_answers, wait_for
from tests.support.env import UserEnv, make_user_env
from tests.test_bridge import bridged_session
from tests.test_bridge import call as call_tool

NOT_REMOTE = "not available remotely"


def remote_socket(user_env: UserEnv) -> Path:
    return user_env.socket.parent / "remote.sock"


def call(path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    return rpc(path, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})


def add_server(user_env: UserEnv, name: str) -> None:
    assert chctl(user_env, "init").returncode == 0 or (user_env.project / "opencode.json").exists()
    done = chctl(user_env, "add", name, "--bridge", "--url", "http://127.0.0.1:9/mcp")
    assert done.returncode == 0, done.stderr


def test_the_remote_socket_answers_only_what_another_machine_needs(daemon: DaemonProcess, user_env: UserEnv) -> None:
    path = remote_socket(user_env)
    assert socket_answers(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert call(path, "daemon.status")["result"] == {
        "version": call(user_env.socket, "daemon.status")["result"]["version"]
    }
    # Everything else, and a method added to the daemon later (the table is opt-in): refused, with the reason.
    for method, params in [
        ("auth.logout", {"name": "srv"}),
        ("token.refresh", {"name": "srv"}),
        ("token.get", {"name": "srv"}),
        ("mcp.add", {"name": "srv", "cwd": "/", "url": "https://x/mcp"}),
        ("mcp.remove", {"name": "srv", "cwd": "/"}),
        ("auth.import", {}),
        ("auth.paste", {"flow_id": "x", "redirect_url": "x"}),
        ("doctor", {}),
        ("share.add", {"names": ["srv"]}),
        ("daemon.shutdown", {}),
    ]:
        error = call(path, method, params)["error"]
        assert error["message"] == f"{method} is {NOT_REMOTE}", error
    assert daemon.proc is not None and daemon.proc.poll() is None  # daemon.shutdown did nothing


def test_nothing_is_shared_until_chctl_share_and_status_marks_it(daemon: DaemonProcess, user_env: UserEnv) -> None:
    add_server(user_env, "srv")
    add_server(user_env, "other")
    path = remote_socket(user_env)
    assert call(path, "status")["result"]["servers"] == []
    for method, params in [("bridge.open", {"name": "srv"}), ("auth.start", {"name": "srv"})]:
        error = call(path, method, params)["error"]
        assert NOT_REMOTE in error["message"] and "not shared" in error["message"], error
        assert error["data"]["hint"] == "on the laptop, run `chctl share srv`"

    done = chctl(user_env, "share", "srv")
    assert done.returncode == 0 and "shared with other machines: srv" in done.stdout, done.stderr
    shared_file = user_env.ch_home / "shared.json"
    assert stat.S_IMODE(shared_file.stat().st_mode) == 0o600 and json.loads(shared_file.read_text()) == ["srv"]
    rows = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    assert {r["name"]: r["shared"] for r in rows} == {"other": False, "srv": True}
    assert "srv (shared)" in chctl(user_env, "status").stdout
    # The remote status: shared servers only, and no paths, configs or tokens.
    assert call(path, "status")["result"]["servers"] == [{"name": "srv", "state": "no_auth", "expires_at": None}]
    # A wait for a login this socket did not start is nobody else's business.
    assert call(path, "auth.wait", {"flow_id": "abc"})["error"]["data"]["code"] == "NOT_FOUND"

    assert chctl(user_env, "unshare", "srv").returncode == 0
    assert call(path, "status")["result"]["servers"] == []
    assert "not shared" in call(path, "bridge.open", {"name": "srv"})["error"]["message"]


def test_an_empty_ch_remote_socket_turns_it_off(user_env: UserEnv) -> None:
    daemon = DaemonProcess(user_env, extra_env={"CH_REMOTE_SOCKET": ""}).start()
    try:
        assert not remote_socket(user_env).exists()
        done = chctl(user_env, "remote", "ssh-config", "box")
        assert done.returncode != 0 and "the remote socket is off" in done.stderr
    finally:
        daemon.stop()


def test_ssh_config_forwards_the_remote_socket_to_the_delegate_path(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "remote", "ssh-config", "box", "--user", "ada")
    assert done.returncode == 0, done.stderr
    delegate = "/home/ada/.context-harness/delegate.sock"
    assert f"Host box\n    RemoteForward {delegate} {remote_socket(user_env)}\n" in done.stdout
    assert "StreamLocalBindUnlink yes" in done.stdout and f"CH_DELEGATE_SOCKET={delegate}" in done.stdout


# --- delegation, without SSH: a second daemon of the same user pointed straight at the first's remote socket ---


def remote_machine(tmp_path_factory: pytest.TempPathFactory, laptop: UserEnv) -> tuple[UserEnv, dict[str, str]]:
    env = make_user_env(Path(tmp_path_factory.mktemp("remote")))
    return env, {"CH_DELEGATE_SOCKET": str(remote_socket(laptop))}


def remote_status(remote: UserEnv, delegate: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = chctl(remote, "status", "--json", extra_env=delegate)
    assert done.returncode == 0, done.stderr
    return {r["name"]: r for r in json.loads(done.stdout)["servers"]}


def laptop_answered(remote: UserEnv, delegate: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    rows = remote_status(remote, delegate)
    return rows if rows["keyed"]["state"] != "delegated" else None


def test_a_delegating_daemon_carries_shared_servers_and_survives_the_laptop_going_away(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = mcp_api_key_server()
    assert chctl(user_env, "init").returncode == 0
    key = ["--key-header", server.header, "-k", server.key]
    done = chctl(user_env, "add", "keyed", "--bridge", "--url", server.url, *key)
    assert done.returncode == 0, done.stderr
    assert chctl(user_env, "share", "keyed").returncode == 0
    remote, delegate = remote_machine(tmp_path_factory, user_env)
    remote_daemon = DaemonProcess(remote, extra_env=delegate).start()
    try:
        assert chctl(remote, "init", extra_env=delegate).returncode == 0
        done = chctl(remote, "add", "keyed", "--mode", "header", extra_env=delegate)
        assert done.returncode != 0 and "no header or key can be written here" in done.stderr
        assert chctl(remote, "add", "keyed", extra_env=delegate).returncode == 0  # by its name alone
        # A server added with its URL on the remote itself stays local: it is not the laptop's.
        assert chctl(remote, "add", "own", "--bridge", "--url", server.url, extra_env=delegate).returncode == 0
        # The remote waits 3 s for the laptop's part of a status: a loaded laptop may answer a later one.
        rows = wait_for(lambda: laptop_answered(remote, delegate), 60, what="the laptop's part of the status")
        assert rows["keyed"]["via"] == delegate["CH_DELEGATE_SOCKET"] and rows["keyed"]["state"] == "api_key"
        assert rows["own"]["via"] is None
        assert chctl(remote, "auth", "keyed", "--status", extra_env=delegate).returncode == 0  # usable there
        assert server.key not in (remote.project / "opencode.json").read_text()

        async def session() -> None:
            async with bridged_session(remote, "keyed") as client:
                assert await call_tool(client, "echo", text="one") == "one"
                daemon.stop()  # the laptop goes away (SSH closed, laptop asleep)
                with pytest.raises(MCPError) as down:
                    await call_tool(client, "echo", text="two")
                assert "reconnect" in str(down.value), str(down.value)
                row = remote_status(remote, delegate)["keyed"]
                assert row["state"] == "delegated" and "reconnect" in row["last_error"]
                await asyncio.to_thread(daemon.start)
                assert await call_tool(client, "echo", text="three") == "three"  # nothing else restarted

        asyncio.run(session())
    finally:
        remote_daemon.stop()
    assert not (remote.ch_home / "tokens").exists() or not any((remote.ch_home / "tokens").iterdir())
