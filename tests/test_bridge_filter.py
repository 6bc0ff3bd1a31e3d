"""`chctl bridge NAME` as a filter (`printf ... | chctl bridge NAME`): every request read before EOF is answered,
within a deadline; a bridge that leaves at once is not counted in `status`; a server's refusal comes back in the
server's own words. Real daemon, real chctl, the project's MCP SDK server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def lines(*messages: dict[str, Any], last_newline: bool = True) -> str:
    text = "\n".join(json.dumps(m) for m in messages)
    return text + ("\n" if last_newline else "")


def replies(stdout: str) -> dict[Any, dict[str, Any]]:
    found = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {reply.get("id"): reply for reply in found}


@pytest.fixture
def peer(daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory) -> UserEnv:
    server = mcp_api_key_server()
    assert chctl(user_env, "init").returncode == 0
    added = chctl(user_env, "add", "peer", "--url", server.url, "-k", server.key, "--key-header", server.header)
    assert added.returncode == 0, added.stderr
    return user_env


def bridges_in_status(user_env: UserEnv) -> int:
    [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    return len(row["bridges"])


def test_every_request_read_before_eof_is_answered_then_the_bridge_exits(peer: UserEnv) -> None:
    # The last line has no newline: a filter still reads it.
    done = chctl(peer, "bridge", "peer", input=lines(INITIALIZE, INITIALIZED, TOOLS_LIST, last_newline=False))
    assert done.returncode == 0, done.stderr
    answered = replies(done.stdout)
    assert set(answered) == {1, 2}
    assert answered[1]["result"]["protocolVersion"]
    assert any(tool["name"] == "echo" for tool in answered[2]["result"]["tools"])


def test_an_answer_still_owed_at_the_deadline_gets_an_error_and_the_bridge_exits(peer: UserEnv) -> None:
    never = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "progress_then_wait", "arguments": {"key": "nobody-releases-this"}},
    }
    # The deadline shortened in the real bridge process: the server would hold the call for 60 s.
    script = (
        "import sys; from context_harness.client import bridge; "
        "bridge.EOF_ANSWER_DEADLINE_S = 2.0; sys.exit(bridge.run('peer'))"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=lines(INITIALIZE, INITIALIZED, never),
        env={**peer.vars(), "CH_NO_AUTOSTART": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    answered = replies(done.stdout)
    assert answered[1]["result"]["protocolVersion"]
    assert answered[3]["error"]["data"]["code"] == "TIMEOUT"
    assert "after stdin closed" in answered[3]["error"]["message"]


def test_a_bridge_that_leaves_before_the_daemon_answers_is_not_counted(peer: UserEnv) -> None:
    # The attack as a client makes it: ask for a bridge and hang up before the answer, several times.
    for _ in range(5):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(peer.socket))
            open_request = {"jsonrpc": "2.0", "id": "x", "method": "bridge.open", "params": {"name": "peer"}}
            sock.sendall(json.dumps(open_request).encode() + b"\n")
    # And as the issue saw it: `echo garbage | chctl bridge peer`.
    for _ in range(3):
        chctl(peer, "bridge", "peer", input="garbage\n")
    wait_for(lambda: bridges_in_status(peer) == 0, 10, 0.1, "no bridge left in status")


def test_a_request_before_initialize_comes_back_with_the_servers_own_words(
    peer: UserEnv, daemon: DaemonProcess
) -> None:
    done = chctl(peer, "bridge", "peer", input=lines(TOOLS_LIST))
    error = replies(done.stdout)[2]["error"]
    assert "HTTP 400" in error["message"]
    assert "Missing session ID" in error["message"]  # what the MCP SDK's server said
    assert "`chctl check peer`" in error["data"]["hint"]
    failed = [e for e in daemon.log_events() if e.get("event") == "relay_request_failed"]
    assert any("Missing session ID" in e.get("reason", "") for e in failed)


def test_an_unknown_name_with_stdin_closed_is_an_error_on_stderr(peer: UserEnv) -> None:
    done = chctl(peer, "bridge", "peeer", input="")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error[NOT_FOUND]: unknown server 'peeer'")
    assert "did you mean `peer`?" in done.stderr


def test_a_servers_words_are_quoted_bounded_and_printable() -> None:
    from context_harness.upstream.messages import server_words

    hostile = {"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "\x1b]0;pwned\x07" + "A" * 10_000}}
    quoted = server_words(json.dumps(hostile).encode())
    assert len(quoted) <= 200 and "\x1b" not in quoted and "\x07" not in quoted
    assert server_words(b"<html><body><h1>400 Bad Request</h1><script>x()</script></body></html>") == (
        "400 Bad Request"
    )
    assert server_words(b"\xff\xfe not utf-8 \x00") == "not utf-8"
    assert server_words(b"") == ""
