"""A mistyped server name is an error in every command that takes one, with the closest names the user has (or
the registry knows): nothing is shared, logged into or bridged under a typo. Real daemon, real chctl, the
project's API-key MCP server."""

from __future__ import annotations

import json

import pytest

from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

TYPO = "peeer"
COMMANDS_TAKING_A_NAME = [
    ("share", TYPO),
    ("unshare", TYPO),
    ("token", TYPO),
    ("token", TYPO, "--header"),
    ("auth", TYPO, "--no-browser"),
    ("auth", TYPO, "--status"),
    ("auth", TYPO, "--logout"),
    ("refresh", TYPO),
    ("remove", TYPO),
    ("check", TYPO),
    ("bridge", TYPO),
    ("add", TYPO),
]


@pytest.fixture
def peer_added(daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory) -> UserEnv:
    server = mcp_api_key_server()
    assert chctl(user_env, "init").returncode == 0
    added = chctl(user_env, "add", "peer", "--url", server.url, "-k", server.key, "--key-header", server.header)
    assert added.returncode == 0, added.stderr
    return user_env


def test_a_mistyped_name_is_an_error_that_names_the_closest_one_in_every_command(peer_added: UserEnv) -> None:
    wrong = {}
    for argv in COMMANDS_TAKING_A_NAME:
        done = chctl(peer_added, *argv, input="")  # `bridge` reads stdin: closed at once, as `</dev/null`
        said = done.stdout + done.stderr
        # `--url /`: the flags of `add`, once hinted under `token`
        if done.returncode == 0 or "did you mean `peer`?" not in said or "--url /" in said:
            wrong[" ".join(argv)] = (done.returncode, said)
    assert wrong == {}
    shared = peer_added.ch_home / "shared.json"
    assert not shared.exists() or TYPO not in json.loads(shared.read_text())


def test_sharing_a_typo_changes_nothing_and_sharing_the_real_name_works(peer_added: UserEnv) -> None:
    assert chctl(peer_added, "share", "peer").returncode == 0
    done = chctl(peer_added, "share", "peer", TYPO)
    assert done.returncode == 1 and "error[NOT_FOUND]: unknown server 'peeer'" in done.stderr
    assert json.loads((peer_added.ch_home / "shared.json").read_text()) == ["peer"]
    assert chctl(peer_added, "unshare", "peer").returncode == 0
    assert json.loads((peer_added.ch_home / "shared.json").read_text()) == []


def test_a_typo_of_a_registry_name_suggests_it(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "auth", "contex7", "--status")
    assert done.returncode == 1
    assert "did you mean `context7`?" in done.stderr
