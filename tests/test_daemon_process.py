"""The daemon as a real process: one per CH_HOME, socket permissions, signals, autostart, peer checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, chctl, rpc, socket_answers, wait_for
from tests.support.env import VENV_BIN, UserEnv


def test_status_reports_version_pid_uptime_socket_and_home(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "daemon", "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["pid"] == daemon.proc.pid
    assert status["socket"] == str(user_env.socket)
    assert status["home"] == str(user_env.ch_home)
    assert status["version"] and status["uptime_s"] >= 0


def test_socket_is_0600_in_a_0700_directory(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert stat.S_IMODE(user_env.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(user_env.socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(user_env.ch_home.stat().st_mode) == 0o700


def test_second_daemon_for_same_home_exits_1_with_a_clear_message(daemon: DaemonProcess, user_env: UserEnv) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "context_harness.daemon"],
        env=user_env.vars(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert (
        rpc(user_env.socket, {"jsonrpc": "2.0", "id": 1, "method": "daemon.status"})["result"]["pid"] == daemon.proc.pid
    )


def test_stale_socket_left_by_a_crash_is_replaced(user_env: UserEnv) -> None:
    user_env.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(user_env.socket))
    stale.close()  # the file stays; nobody listens: what a SIGKILL'd daemon leaves behind
    assert user_env.socket.exists() and not socket_answers(user_env.socket)
    process = DaemonProcess(user_env).start()
    try:
        assert chctl(user_env, "daemon", "status").returncode == 0
    finally:
        process.stop()


def test_sigkill_then_restart_recovers(user_env: UserEnv) -> None:
    first = DaemonProcess(user_env).start()
    first.stop(signal.SIGKILL)
    second = DaemonProcess(user_env).start()
    try:
        assert chctl(user_env, "status").returncode == 0
    finally:
        second.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_remove_the_socket_and_exit_0(user_env: UserEnv, sig: int) -> None:
    process = DaemonProcess(user_env).start()
    assert process.stop(sig) == 0
    assert not user_env.socket.exists()
    assert any(e.get("event") == "daemon_stopped" for e in process.log_events())


def test_chctl_starts_the_daemon_when_nobody_answers(user_env: UserEnv) -> None:
    done = chctl(user_env, "status", "--json", extra_env={"CH_NO_AUTOSTART": "0"})
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["daemon"]["pid"]
    try:
        assert socket_answers(user_env.socket)
    finally:
        assert chctl(user_env, "daemon", "stop").returncode == 0
    wait_for(lambda: not _alive(pid), 10, what="autostarted daemon to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our grandchild, reaped by init eventually) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_without_autostart_chctl_says_daemon_unavailable_and_how_to_start_it(user_env: UserEnv) -> None:
    done = chctl(user_env, "status")
    assert done.returncode != 0
    assert "error[DAEMON_UNAVAILABLE]" in done.stderr
    assert "chctl daemon start" in done.stderr
    assert not user_env.socket.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_a_peer_with_another_uid_is_refused(daemon: DaemonProcess, user_env: UserEnv) -> None:
    # Open the filesystem permissions so only SO_PEERCRED stands between uid 65534 and the daemon.
    user_env.socket.chmod(0o666)
    opened = []
    for directory in user_env.socket.parents:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & 0o001:
            directory.chmod(mode | 0o005)
            opened.append((directory, mode))
    try:
        _connect_as_nobody_and_expect_silence(daemon, user_env)
    finally:
        for directory, mode in opened:
            directory.chmod(mode)


def _connect_as_nobody_and_expect_silence(daemon: DaemonProcess, user_env: UserEnv) -> None:
    probe = (
        "import os,socket,sys\n"
        "os.setgid(65534); os.setuid(65534)\n"  # drop to nobody after start: the venv's python is under /root
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        # The daemon may close before the request is even sent (EPIPE) or after (reset, or EOF): all are silence.
        "try:\n"
        '    s.sendall(b\'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\\n\')\n'
        "    print(repr(s.recv(4096)))\n"
        "except (BrokenPipeError, ConnectionResetError):\n    print(repr(b''))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(user_env.socket)], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b''"  # connected, then closed without an answer
    assert any(e.get("event") == "peer_refused" for e in daemon.log_events())
    assert rpc(user_env.socket, {"jsonrpc": "2.0", "id": 2, "method": "daemon.status"})["result"]


def test_sighup_rereads_settings_from_daemon_env(user_env: UserEnv) -> None:
    daemon = DaemonProcess(user_env, drop_env=("CH_LOG_LEVEL",)).start()
    try:
        chctl(user_env, "init")
        assert chctl(user_env, "add", "exa").returncode == 0
        assert any(e.get("event") == "server_added" for e in daemon.log_events())
        (user_env.ch_home / "daemon.env").write_text("CH_LOG_LEVEL=warning\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _level_applied(user_env, daemon), 10, what="the new log level")
        assert chctl(user_env, "status").returncode == 0
    finally:
        daemon.stop()


def test_sighup_applies_the_rpc_idle_timeout_to_new_connections(user_env: UserEnv) -> None:
    daemon = DaemonProcess(user_env).start()
    try:
        assert not _silent_connection_closed(user_env, within_s=1.5)  # the default: 30 s of silence
        (user_env.ch_home / "daemon.env").write_text("CH_RPC_IDLE_TIMEOUT_S=0.5\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _silent_connection_closed(user_env, within_s=5), 20, what="the new idle timeout")
    finally:
        daemon.stop()


def _silent_connection_closed(user_env: UserEnv, within_s: float) -> bool:
    """Whether the daemon hangs up on a connection that says nothing, within `within_s`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(user_env.socket))
        conn.settimeout(within_s)
        try:
            return conn.recv(1) == b""
        except TimeoutError:
            return False


def _level_applied(user_env: UserEnv, daemon: DaemonProcess) -> bool:
    """After the reload, info events (server_added) no longer reach the log."""
    before = sum(e.get("event") == "server_added" for e in daemon.log_events())
    assert chctl(user_env, "add", "linear").returncode == 0
    return sum(e.get("event") == "server_added" for e in daemon.log_events()) == before


# --- starting the daemon never imports from the current directory -----------------------------------------

PLANTED_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('ran inside ' + __name__)\n"


def _planted_directory(user_env: UserEnv) -> tuple[Path, Path]:
    """A directory holding a `structlog.py` (the daemon imports structlog) that leaves a marker if imported."""
    planted = user_env.root / "downloads"
    planted.mkdir()
    marker = user_env.root / "pwned"
    for module in ("structlog.py", "aiohttp.py", "pydantic.py"):
        (planted / module).write_text(PLANTED_MODULE.format(marker=str(marker)))
    return planted, marker


def _installed_chctl(user_env: UserEnv, planted: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `chctl` console script a user types, run in the planted directory, autostart on."""
    return subprocess.run(
        [str(VENV_BIN / "chctl"), *args],
        env=user_env.vars(),
        cwd=planted,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_autostart_from_a_directory_with_a_planted_module_does_not_import_it(user_env: UserEnv) -> None:
    planted, marker = _planted_directory(user_env)
    done = _installed_chctl(user_env, planted, "status", "--json")
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["daemon"]["pid"]
    try:
        assert not marker.exists(), marker.read_text()
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
    finally:
        assert _installed_chctl(user_env, planted, "daemon", "stop").returncode == 0
    wait_for(lambda: not _alive(pid), 10, what="autostarted daemon to exit")


def test_an_autostarted_daemon_that_exits_at_once_is_reported_without_the_full_wait(user_env: UserEnv) -> None:
    user_env.ch_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (user_env.ch_home / "daemon.env").write_text("CH_HTTP_TIMEOUT_S=-1\n")  # invalid: the daemon exits 1
    try:
        done = chctl(user_env, "status", autostart=True, timeout=25)  # under AUTOSTART_WAIT_S: no full wait
    finally:
        chctl(user_env, "daemon", "stop")  # should one have started after all
    assert done.returncode != 0
    assert "error[DAEMON_UNAVAILABLE]" in done.stderr and "exited with code 1" in done.stderr
    assert "daemon.log" in done.stderr  # where to look


def test_daemon_run_from_a_directory_with_a_planted_module_does_not_import_it(user_env: UserEnv) -> None:
    planted, marker = _planted_directory(user_env)
    proc = subprocess.Popen(
        [str(VENV_BIN / "chctl"), "daemon", "run"],
        env=user_env.vars(),
        cwd=planted,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket_answers(user_env.socket) or proc.poll() is not None, 10, what="daemon socket")
        assert proc.poll() is None and not marker.exists()
    finally:
        proc.terminate()
        proc.wait(10)
