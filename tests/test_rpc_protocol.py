"""Bad RPC input gets a JSON-RPC error (or a closed connection) and the daemon keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from tests.support.daemon import DaemonProcess, rpc
from tests.support.env import UserEnv

STATUS = {"jsonrpc": "2.0", "id": 99, "method": "daemon.status"}


def still_serving(user_env: UserEnv) -> None:
    reply = rpc(user_env.socket, STATUS)
    assert reply["id"] == 99 and reply["result"]["pid"] > 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"this is not json\n", -32700),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "daemon.status"}\n', -32600),
        (b"[1, 2]\n", -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "no.such.method"}\n', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "mcp.add", "params": {"name": 5}}\n', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "mcp.add", "params": [1]}\n', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status", "params": {"surprise": 1}}\n', -32602),
    ],
)
def test_garbage_gets_a_jsonrpc_error_and_the_daemon_keeps_serving(
    daemon: DaemonProcess, user_env: UserEnv, raw: bytes, code: int
) -> None:
    reply = rpc(user_env.socket, None, raw=raw)
    errors = reply if isinstance(reply, list) else [reply]
    assert all(e["error"]["code"] == code for e in errors), reply
    still_serving(user_env)


def test_a_service_failure_carries_its_error_code_name_and_a_hint(daemon: DaemonProcess, user_env: UserEnv) -> None:
    reply = rpc(
        user_env.socket, {"jsonrpc": "2.0", "id": 7, "method": "mcp.list", "params": {"cwd": str(user_env.project)}}
    )
    assert reply["id"] == 7
    assert reply["error"]["data"]["code"] == "CONFIG_MISSING"
    assert "chctl init" in reply["error"]["data"]["hint"]


def test_a_batch_gets_one_reply_per_request(daemon: DaemonProcess, user_env: UserEnv) -> None:
    batch = [dict(STATUS, id=1), {"jsonrpc": "2.0", "method": "daemon.status"}, dict(STATUS, id=2)]
    reply = rpc(user_env.socket, batch)
    assert sorted(r["id"] for r in reply) == [1, 2]  # the notification gets no reply


def test_a_2_mib_line_is_refused_without_disturbing_others(daemon: DaemonProcess, user_env: UserEnv) -> None:
    with socket.socket(socket.AF_UNIX) as other:
        other.connect(str(user_env.socket))  # a well-behaved client connected meanwhile
        huge = b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status", "params": {"x": "' + b"a" * (2 << 20)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(user_env.socket))
            try:
                sock.sendall(huge + b'"}}\n')
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may hang up before we finish sending
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
        if data:
            assert json.loads(data.splitlines()[0])["error"]["code"] == -32600
        other.sendall(json.dumps(STATUS).encode() + b"\n")
        assert json.loads(other.makefile().readline())["result"]["pid"] == daemon.proc.pid
    still_serving(user_env)


def test_half_a_line_then_disconnect_is_harmless(daemon: DaemonProcess, user_env: UserEnv) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(user_env.socket))
        sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')
    still_serving(user_env)


def test_a_connection_idle_mid_message_is_closed(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env, extra_env={"CH_RPC_IDLE_TIMEOUT_S": "0.5"}).start()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(user_env.socket))
            sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')
            assert sock.recv(100) == b""  # closed by the daemon, well before our 10 s timeout
        assert any(e.get("event") == "connection_idle_closed" for e in process.log_events())
        still_serving(user_env)
    finally:
        process.stop()


def test_many_connections_at_once_are_all_served(daemon: DaemonProcess, user_env: UserEnv) -> None:
    replies: list[dict[str, object]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        reply = rpc(user_env.socket, dict(STATUS, id=i))
        with lock:
            replies.append(reply)

    # Hold one connection open and silent while 32 others are served.
    with socket.socket(socket.AF_UNIX) as idle:
        idle.connect(str(user_env.socket))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sorted(r["id"] for r in replies) == list(range(32))


# --- hostile input: every malformed request gets a JSON-RPC answer, never a dropped connection ------------


def _request(method: str, params: object, request_id: object = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode() + b"\n"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status", "params": ' + b"[" * 100_000 + b"\n", -32700),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "daemon.status", "params": {"x": '
            + b"[" * 900
            + b"]" * 900
            + b"}}\n",
            -32602,
        ),
        (b'{"jsonrpc": "2.0", "id": ' + b"7" * 5000 + b', "method": "daemon.status"}\n', -32700),
        (b'{"jsonrpc": "2.0", "id": Infinity, "method": "daemon.status"}\n', -32700),
        (b'{"jsonrpc": "2.0", "id": NaN, "method": "daemon.status"}\n', -32700),
        (b'{"jsonrpc": "2.0", "id": 1e999, "method": "daemon.status"}\n', -32700),
        (b'{"jsonrpc": "2.0", "id": {"a": [1]}, "method": "daemon.status"}\n', -32600),
        (_request("mcp.list", {"cwd": "/tmp/a\u0000b"}), -32602),
        (_request("mcp.list", {"cwd": "/tmp", "project": "x\u0000"}), -32602),
        (_request("mcp.list", {"cwd": "relative/dir"}), -32602),
        (_request("doctor", {"cwd": "/\u0000"}), -32602),
        (_request("auth.start", {"name": "srv", "timeout_s": 1e308}), -32602),
    ],
)
def test_hostile_requests_get_a_jsonrpc_error_not_a_dropped_connection(
    daemon: DaemonProcess, user_env: UserEnv, raw: bytes, code: int
) -> None:
    reply = rpc(user_env.socket, None, raw=raw)
    assert reply is not None, "the daemon dropped the connection"
    assert reply["error"]["code"] == code, reply
    assert reply["id"] in (None, 1)
    assert "Traceback" not in daemon.log() and "rpc_method_crashed" not in daemon.log()
    still_serving(user_env)


@pytest.mark.parametrize("name", ["srv\n", "srv\r", "../srv", "srv/x", ".srv", "a..b", "x" * 65, "", "s rv"])
def test_a_name_that_is_not_a_name_is_refused_and_nothing_is_written(
    daemon: DaemonProcess, user_env: UserEnv, name: str
) -> None:
    config = user_env.project / "opencode.json"
    config.write_text('{"mcp": {}}\n')
    params = {"cwd": str(user_env.project), "name": name, "url": "https://mcp.example/mcp", "api_key": "k-1"}
    for method, method_params in (
        ("mcp.add", params),
        ("auth.status", {"name": name}),
        ("auth.logout", {"name": name}),
        ("token.refresh", {"name": name}),
        ("auth.start", {"name": name}),
    ):
        reply = rpc(user_env.socket, None, raw=_request(method, method_params))
        assert reply["error"]["code"] == -32602, (method, reply)
    assert config.read_text() == '{"mcp": {}}\n'
    tokens = user_env.ch_home / "tokens"
    assert not tokens.exists() or list(tokens.iterdir()) == []
    assert "rpc_method_crashed" not in daemon.log()
    still_serving(user_env)


@pytest.mark.parametrize("through", ["chd.sock", "remote.sock"])
def test_bridge_open_with_a_900_kib_name_is_invalid_params_on_both_sockets(
    daemon: DaemonProcess, user_env: UserEnv, through: str
) -> None:
    """It was an INTERNAL error: the name went on to become a file name."""
    raw = _request("bridge.open", {"name": "n" * (900 * 1024)}, request_id="b")
    reply = rpc(user_env.socket.parent / through, None, raw=raw)
    assert reply["id"] == "b" and reply["error"]["code"] == -32602, reply["error"]
    assert reply["error"]["message"].startswith("invalid params: name: ")
    assert "nnnn" not in reply["error"]["message"]
    assert "rpc_method_crashed" not in daemon.log()
    still_serving(user_env)
