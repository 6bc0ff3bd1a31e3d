"""A server URL with a user name or password in it (`https://user:password@host/mcp`): refused where URLs come
in, and one recorded before that rule is a clear error on every path that would use it, never INTERNAL, and its
password shows nowhere."""

from __future__ import annotations

import json

import pytest

from context_harness.primitives.outside_values import url_problem
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.test_hostile_upstream import KEY, HostileMcp, RawBridge, add_bridged, initialize

PASSWORD = "pw-in-the-url-not-real"


@pytest.mark.parametrize(
    "url",
    [f"https://user:{PASSWORD}@mcp.example/mcp", "https://user@mcp.example/mcp", f"http://:{PASSWORD}@127.0.0.1:9/mcp"],
)
def test_a_url_with_user_info_is_refused_without_echoing_it(url: str) -> None:
    problem = url_problem(url, {}, carries_secret=False)
    assert problem is not None and "user name or password" in problem
    assert PASSWORD not in problem


def test_chctl_add_refuses_user_info_and_says_where_a_key_goes(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    added = chctl(user_env, "add", "withpw", "--bridge", "--url", f"https://user:{PASSWORD}@mcp.example/mcp")
    assert added.returncode != 0
    assert "user name or password" in added.stderr and "--api-key-env" in added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    assert "withpw" not in (user_env.project / "opencode.json").read_text()


async def test_a_recorded_url_with_user_info_is_a_clear_error_for_the_bridge_and_check(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async with HostileMcp().running() as server:
        add_bridged(user_env, "withpw", server.url, "--key-header", "X-Key", "-k", KEY)
        # As an older chctl recorded it, before the gate refused user info.
        with_user_info = server.url.replace("http://", f"http://user:{PASSWORD}@")
        for recorded in (user_env.ch_home / "bindings.json", user_env.ch_home / "tokens" / "withpw.json"):
            recorded.write_text(recorded.read_text().replace(server.url, with_user_info))
        async with RawBridge(user_env, "withpw") as bridge:
            reply = await bridge.ask(initialize())
        checked = chctl(user_env, "check", "withpw", "--json")
    assert reply["error"]["data"]["code"] == "INVALID_PARAMS", reply
    assert "user name or password" in reply["error"]["message"]
    assert "chctl add withpw --url" in reply["error"]["data"]["hint"]
    (probe,) = json.loads(checked.stdout)
    assert (probe["outcome"], probe["level"]) == ("config", "failed") and "user name or password" in probe["message"]
    assert server.seen_headers == []  # nothing was sent, least of all the key
    assert PASSWORD not in json.dumps(reply) + checked.stdout + checked.stderr + daemon.log()
