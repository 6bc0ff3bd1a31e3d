"""The delegate socket belongs to the user (issue 30 §3), tested as the attack: another local user listens at the
path `CH_DELEGATE_SOCKET` names (a forward that is gone, a path in a shared directory). The daemon must send it
nothing — not a bridged session's `initialize` or `tools/call` arguments, not `auth.start` — and must not take
a login URL from it; it says which socket and what to do. The other user is `nobody`, its listener runs under
`setpriv` (tests/peers/foreign_daemon.py answers every request with a plausible success).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.test_socket_trust import (  # noqa: F401 (fixtures)
    ForeignDaemon,
    foreign_daemon,
    needs_root,
    other_user,
    read_line,
    shared_runtime,
)

SECRET_ARGUMENT = "the-users-private-query-b7f2"


@needs_root
def test_a_delegate_socket_of_another_user_gets_no_session_and_gives_no_login_url(
    user_env: UserEnv, request: pytest.FixtureRequest
) -> None:
    foreign: ForeignDaemon = request.getfixturevalue("foreign_daemon")  # test_socket_trust's
    delegate = {"CH_DELEGATE_SOCKET": str(foreign.socket)}
    daemon = DaemonProcess(user_env, extra_env=delegate).start()
    try:
        assert chctl(user_env, "init").returncode == 0
        added = chctl(user_env, "add", "srv")  # by its name alone: the laptop's to carry
        assert added.returncode == 0, added.stderr

        bridge = subprocess.Popen(
            [sys.executable, "-m", "context_harness.client.chctl", "bridge", "srv"],
            env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert bridge.stdin is not None and bridge.stdout is not None
        try:
            for request in (
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": {"q": SECRET_ARGUMENT}}},
            ):
                bridge.stdin.write(json.dumps(request).encode() + b"\n")
                bridge.stdin.flush()
                answer = json.loads(read_line(bridge.stdout, 30))
                assert answer["id"] == request["id"] and answer["error"]["data"]["code"] == "DAEMON_UNTRUSTED", answer
                assert str(foreign.socket) in answer["error"]["message"]
        finally:
            bridge.stdin.close()
            bridge.wait(10)

        login = chctl(user_env, "auth", "srv", "--no-browser", "--timeout", "5")
        assert login.returncode != 0 and "error[DAEMON_UNTRUSTED]" in login.stderr, login.stderr
        message = f"refusing the delegate socket {foreign.socket}: it is served by uid 65534"
        assert message in login.stderr and "CH_DELEGATE_SOCKET" in login.stderr
        assert "http" not in login.stdout  # no login URL of the other user's choosing

        (row,) = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
        assert message in row["last_error"]
    finally:
        daemon.stop()
    assert foreign.received() == b""
