"""The socket belongs to the user on both ends (issue 17 §4), tested as the attack.

Another local user creates `context-harness/` first in a shared runtime directory (mode 1777, as /tmp is when
XDG_RUNTIME_DIR is unset) and listens there. The daemon must refuse to bind in a directory that is not the
user's alone; chctl and `chctl bridge` must send nothing — not the key, not the server's name — to a listener
of another uid. The other user is `nobody`, the fake daemon runs under `setpriv` as that user.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from context_harness.client import rpc_client
from tests.support.daemon import DaemonProcess, chctl, socket_answers, wait_for
from tests.support.env import UserEnv

FOREIGN_DAEMON = Path(__file__).parent / "peers" / "foreign_daemon.py"
KEY = "sk-live-4f9c2b7e1d0a-the-victims-key"
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="acting as another user (chown, setpriv) needs root")


@dataclass
class OtherUser:
    uid: int
    gid: int
    name: str
    group: str


@pytest.fixture
def other_user() -> OtherUser:
    entry = pwd.getpwnam("nobody")
    return OtherUser(entry.pw_uid, entry.pw_gid, entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name)


@pytest.fixture
def shared_runtime() -> Iterator[Path]:
    """A runtime directory every user can write (1777), reachable by the other user (tmp_path is not)."""
    directory = Path(tempfile.mkdtemp(prefix="ch-shared-", dir="/tmp"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class ForeignDaemon:
    socket: Path
    record: Path
    proc: subprocess.Popen[bytes]

    def lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def received(self) -> bytes:
        """Everything any connection sent it, once every accepted connection has been closed."""

        def settled() -> bool:
            lines = self.lines()
            accepted = sum(line == "accepted" for line in lines)
            return accepted > 0 and accepted == sum(line.startswith("closed ") for line in lines)

        wait_for(settled, 20, what="the foreign daemon to see the connection closed")
        return b"".join(bytes.fromhex(line[5:]) for line in self.lines() if line.startswith("data "))


@pytest.fixture
def foreign_daemon(shared_runtime: Path, other_user: OtherUser) -> Iterator[ForeignDaemon]:
    """The other user got there first: their `context-harness/` in the shared directory, their socket in it."""
    trap = shared_runtime / "context-harness"
    trap.mkdir()
    os.chown(trap, other_user.uid, other_user.gid)
    trap.chmod(0o755)
    record = trap / "record"
    proc = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={other_user.uid}",
            f"--regid={other_user.gid}",
            "--clear-groups",
            os.path.realpath(sys.executable),
            "-I",
            "-c",
            FOREIGN_DAEMON.read_text(),
            str(trap / "chd.sock"),
            str(record),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        wait_for(lambda: Path(f"{record}.ready").exists() or proc.poll() is not None, 20, what="foreign daemon")
        assert proc.poll() is None, "the foreign daemon did not start"
        assert (trap / "chd.sock").stat().st_uid == other_user.uid
        yield ForeignDaemon(trap / "chd.sock", record, proc)
    finally:
        proc.terminate()
        proc.wait(10)


@needs_root
def test_chctl_add_sends_no_key_to_another_users_daemon(
    user_env: UserEnv, shared_runtime: Path, foreign_daemon: ForeignDaemon
) -> None:
    done = chctl(
        user_env,
        "add",
        "srv",
        "--url",
        "http://127.0.0.1:9/mcp",
        "-k",
        KEY,
        extra_env={"XDG_RUNTIME_DIR": str(shared_runtime)},
    )
    assert done.returncode != 0
    assert "error[DAEMON_UNTRUSTED]" in done.stderr, done.stderr
    assert str(foreign_daemon.socket) in done.stderr and "uid 65534" in done.stderr
    assert "CH_SOCKET" in done.stderr  # the way out
    assert KEY not in done.stderr + done.stdout
    assert foreign_daemon.received() == b""


@needs_root
def test_chctl_bridge_sends_nothing_to_another_users_daemon_and_tells_the_client(
    user_env: UserEnv, foreign_daemon: ForeignDaemon
) -> None:
    bridge = subprocess.Popen(
        [sys.executable, "-m", "context_harness.client.chctl", "bridge", "srv"],
        env={**user_env.vars(), "CH_SOCKET": str(foreign_daemon.socket), "CH_NO_AUTOSTART": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert bridge.stdin is not None and bridge.stdout is not None
    try:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"secret": KEY}}
        bridge.stdin.write(json.dumps(initialize).encode() + b"\n")
        bridge.stdin.flush()
        reply = read_line(bridge.stdout, 30)
        assert bridge.poll() is None  # an agent's local server must not exit while stdin is open
    finally:
        bridge.stdin.close()
        bridge.wait(10)
    answer = json.loads(reply)
    assert answer["id"] == 1 and answer["error"]["data"]["code"] == "DAEMON_UNTRUSTED", answer
    assert str(foreign_daemon.socket) in answer["error"]["message"]
    assert foreign_daemon.received() == b""


@needs_root
def test_without_peer_credentials_the_socket_files_owner_decides(
    foreign_daemon: ForeignDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform without SO_PEERCRED or LOCAL_PEERCRED: the daemon binds its socket itself, so the file's
    owner is the daemon's user. The user's own listener still passes."""
    monkeypatch.setattr(sys, "platform", "freebsd14")
    with pytest.raises(rpc_client.RpcError) as refused:
        rpc_client.connect_trusted(str(foreign_daemon.socket))
    assert refused.value.code == "DAEMON_UNTRUSTED"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as own:
        own.bind(str(tmp_path / "own.sock"))
        own.listen(1)
        connection = rpc_client.connect_trusted(str(tmp_path / "own.sock"))
        assert connection is not None
        connection.close()
    assert foreign_daemon.received() == b""


def test_chctl_talks_to_the_users_own_daemon(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "daemon", "status")
    assert done.returncode == 0, done.stderr


# --- the daemon side: never bind in a directory someone else controls ----------------------------------


def start_daemon(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "context_harness.daemon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_root
def test_the_daemon_refuses_a_socket_directory_another_user_made(
    user_env: UserEnv, shared_runtime: Path, other_user: OtherUser
) -> None:
    trap = shared_runtime / "context-harness"
    trap.mkdir()
    os.chown(trap, other_user.uid, other_user.gid)
    done = start_daemon({**user_env.vars(), "XDG_RUNTIME_DIR": str(shared_runtime)})
    assert done.returncode == 1
    assert f"refusing to start: {trap} is owned by uid {other_user.uid}" in done.stderr, done.stderr
    assert "CH_SOCKET" in done.stderr and "Traceback" not in done.stderr
    assert list(trap.iterdir()) == []  # no socket bound there
    assert trap.stat().st_uid == other_user.uid


def test_the_daemon_refuses_a_socket_directory_others_can_write(user_env: UserEnv) -> None:
    opened = user_env.runtime / "context-harness"
    opened.mkdir()
    opened.chmod(0o777)
    done = start_daemon(user_env.vars())
    assert done.returncode == 1
    assert f"refusing to start: {opened} can be written by others (mode 777)" in done.stderr, done.stderr
    assert f"chmod 700 {opened}" in done.stderr and "Traceback" not in done.stderr
    assert stat.S_IMODE(opened.stat().st_mode) == 0o777  # reported, not quietly fixed
    assert not socket_answers(user_env.socket)


def test_a_socket_directly_in_a_shared_directory_is_refused(user_env: UserEnv) -> None:
    shared = user_env.root / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    done = start_daemon({**user_env.vars(), "CH_SOCKET": str(shared / "chd.sock")})
    assert done.returncode == 1
    assert f"refusing to start: {shared} can be written by others" in done.stderr, done.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and not (shared / "chd.sock").exists()


def test_in_a_shared_runtime_directory_the_daemon_makes_its_own_private_one(user_env: UserEnv) -> None:
    user_env.runtime.chmod(0o1777)
    process = DaemonProcess(user_env).start()
    try:
        assert stat.S_IMODE(user_env.socket.parent.stat().st_mode) == 0o700
        assert user_env.socket.parent.stat().st_uid == os.getuid()
    finally:
        process.stop()


def read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """One line from a pipe, or an AssertionError after `timeout_s` (the bridge must answer, not hang)."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert result and result[0], "the bridge did not answer"
    return result[0]
