"""What a server sent never drives the user's terminal; secrets stay out of `ps`; a repository's config
never runs commands in the daemon."""

from __future__ import annotations

import asyncio
import subprocess

from tests.oauth_fakes import FakeWorld, running_world
from tests.support.daemon import DaemonProcess, chctl, rpc
from tests.support.env import UserEnv
from tests.support.login import call, login

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


def assert_no_control_characters(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\x9b"), repr(text)


async def test_an_authorization_url_with_escape_sequences_is_printed_without_them(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    chctl(user_env, "init")
    async with running_world(FakeWorld()) as world:
        world.metadata_overrides = {"authorization_endpoint": world.issuer + "/authorize" + ESCAPES}
        assert chctl(user_env, "add", "srv", "--url", world.server_url).returncode == 0
        done = await asyncio.to_thread(chctl, user_env, "auth", "srv", "--no-browser", "--timeout", "1", input="")
    assert "/authorize" in done.stdout.splitlines()[0]
    assert_no_control_characters(done.stdout + done.stderr)


async def test_scopes_with_escape_sequences_are_printed_without_them(daemon: DaemonProcess, user_env: UserEnv) -> None:
    async with running_world(FakeWorld(token_scope="mcp:read" + ESCAPES)) as world:
        assert "result" in await login(user_env, world)
    done = await asyncio.to_thread(chctl, user_env, "auth", "srv", "--status")
    assert "scopes: mcp:read" in done.stdout
    assert_no_control_characters(done.stdout + done.stderr)
    assert (await call(user_env, "daemon.status"))["result"]["pid"] > 0


def test_a_client_secret_on_the_command_line_gets_a_warning_and_the_env_var_does_not(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    flag = chctl(user_env, "auth", "nosuch", "--client-id", "c", "--client-secret", "s3cret")
    assert "visible to other users in `ps`" in flag.stderr and "NOSUCH_CLIENT_SECRET" in flag.stderr
    env = chctl(user_env, "auth", "nosuch", "--client-id", "c", extra_env={"NOSUCH_CLIENT_SECRET": "s3cret"})
    assert "visible to other users" not in env.stderr
    assert "s3cret" not in flag.stderr + env.stderr


def test_a_client_secret_can_be_typed_at_a_hidden_prompt(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "auth", "nosuch", "--client-id", "c", "--client-secret", "-", input="s3cret\n")
    assert "client secret:" in done.stderr  # asked for it, without echo where there is a terminal
    assert "visible to other users" not in done.stderr and "s3cret" not in done.stdout + done.stderr
    assert "error[NOT_FOUND]" in done.stderr  # it got as far as the daemon


def test_doctor_never_runs_a_repositorys_fsmonitor(daemon: DaemonProcess, user_env: UserEnv) -> None:
    repo = user_env.home / "cloned"
    repo.mkdir()
    marker = user_env.root / "pwned"

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    (repo / "opencode.json").write_text('{"mcp": {}}\n')
    git("add", "opencode.json")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "config")
    request = {"cwd": str(repo), "name": "docs", "url": "https://mcp.example/mcp", "api_key": "k-1"}
    assert "result" in rpc(user_env.socket, {"jsonrpc": "2.0", "id": 1, "method": "mcp.add", "params": request})
    git("config", "core.fsmonitor", f"touch {marker}; echo")  # what a hostile repository ships
    reply = rpc(user_env.socket, {"jsonrpc": "2.0", "id": 2, "method": "doctor", "params": {"cwd": str(repo)}})
    names = [c["name"] for c in reply["result"]["checks"]]
    assert "inline_secret_in_git" in names  # git did run, and answered
    assert not marker.exists()
