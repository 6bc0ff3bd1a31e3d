"""sd_notify and socket activation without systemd: real sockets, real child processes."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_harness.daemon.sd_notify import notify
from context_harness.daemon.socket_activation import inherited_listener

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD_TIMEOUT_S = 20.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: AF_UNIX paths are limited to ~104-108 bytes, pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="ch-") as name:
        yield Path(name)


# --- sd_notify ------------------------------------------------------------------------------------


def _datagram_listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_sends_state_to_notify_socket_path(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(short_dir / "notify.sock")
    with _datagram_listener(path) as manager:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1") is True
        assert manager.recv(4096) == b"READY=1"


def test_notify_reaches_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"context-harness-test-{secrets.token_hex(6)}"
    with _datagram_listener("\0" + name) as manager:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STATUS=serving\nREADY=1") is True
        assert manager.recv(4096) == b"STATUS=serving\nREADY=1"


def test_notify_without_notify_socket_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_to_missing_socket_returns_false_without_raising(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone.sock"))
    assert notify("READY=1") is False


# --- socket activation ------------------------------------------------------------------------------

# The child plays the daemon: it takes the listener, reports what it sees, and serves one connection.
CHILD = """
import os, sys
from context_harness.daemon.socket_activation import inherited_listener
sock = inherited_listener()
left = [name for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES") if name in os.environ]
if sock is None:
    print("none", *left, flush=True)
    sys.exit(0)
print("listener", sock.fileno(), sock.getblocking(), os.get_inheritable(sock.fileno()), *left, flush=True)
sock.setblocking(True)
sock.settimeout(10)
conn, _ = sock.accept()
conn.sendall(b"served by " + str(os.getpid()).encode())
conn.close()
"""


# Does what systemd does between fork and exec: move the socket to fd 3, name this pid in
# LISTEN_PID, then exec the daemon (exec keeps the pid). argv: fd, "self" or a pid, the child code.
EXEC_WRAPPER = """
import os, sys
fd, listen_pid, code = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="chd.sock",
                  LISTEN_PID=str(os.getpid()) if listen_pid == "self" else listen_pid)
os.execv(sys.executable, [sys.executable, "-c", code])
"""


def _spawn_with_fd3(fd: int, listen_pid: str) -> subprocess.Popen[str]:
    """Start CHILD with `fd` at descriptor 3 and LISTEN_FDS=1, as systemd would.

    `listen_pid` is "self" for the child's own pid (known only inside it) or a wrong pid.
    """
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-c", EXEC_WRAPPER, str(fd), listen_pid, CHILD],
        pass_fds=(fd,),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _finish(child: subprocess.Popen[str]) -> str:
    try:
        out, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    return out


def test_inherited_listener_accepts_a_connection_in_the_activated_process(short_dir: Path) -> None:
    path = str(short_dir / "chd.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        child = _spawn_with_fd3(listener.fileno(), "self")
    # The parent's copy is closed: only the child can accept from here on.
    try:
        first_line = child.stdout.readline().split() if child.stdout else []
        assert first_line == ["listener", "3", "False", "False"]  # fd 3, non-blocking, close-on-exec, env cleared
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(path)
            assert client.recv(100) == f"served by {child.pid}".encode()
    finally:
        _finish(child)


def test_listen_pid_of_another_process_is_ignored_and_cleared(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(short_dir / "chd.sock"))
        listener.listen()
        child = _spawn_with_fd3(listener.fileno(), str(os.getpid()))
    assert _finish(child).split() == ["none"]


def test_fd3_that_is_not_a_unix_stream_listener_is_refused() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        child = _spawn_with_fd3(datagram.fileno(), "self")
    assert _finish(child).split() == ["none"]


def test_fd3_that_is_a_pipe_is_refused() -> None:
    read_end, write_end = os.pipe()
    try:
        child = _spawn_with_fd3(read_end, "self")
    finally:
        os.close(read_end)
        os.close(write_end)
    assert _finish(child).split() == ["none"]


def test_without_activation_variables_there_is_no_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert inherited_listener() is None


def test_variables_for_another_pid_are_removed_from_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDNAMES", "chd.sock")
    assert inherited_listener() is None
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(os.environ)
