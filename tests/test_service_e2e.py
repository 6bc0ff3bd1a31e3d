"""The service lifecycle end to end with the real daemon and the real chctl, no systemd needed.

The test plays the service manager: it binds and listens on the socket the way a socket unit does and
hands it over at fd 3 with LISTEN_FDS/LISTEN_PID, and it binds the NOTIFY_SOCKET datagram socket that
`Type=notify` readiness messages go to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from context_harness import service_units as units
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.token_store import TokenStore
from tests.support.daemon import DaemonProcess, chctl, rpc, wait_for
from tests.support.env import UserEnv

START_DEADLINE_S = 15.0
STOP_DEADLINE_S = 15.0
STATUS = {"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}

# Runs in the child between fork and the daemon: put the inherited socket at fd 3 (dup2 makes it
# inheritable), close the original, claim LISTEN_PID for this pid (exec keeps it), then become the daemon.
# A Python trampoline instead of `sh -c '... 3<&N'`: dash only redirects single-digit descriptors.
_ACTIVATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'context_harness.daemon'])\n"
)


# --- the test as service manager ------------------------------------------------------------------------


class NotifySocket:
    """A NOTIFY_SOCKET: records each datagram the daemon sends, with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []

    def expect(self, state: str, deadline_s: float = START_DEADLINE_S) -> float:
        """Wait for a datagram that contains `state` (e.g. "READY=1"); returns when it arrived (monotonic)."""
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {state} within {deadline_s}s; got {[m for _, m in self.received]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            arrived = time.monotonic()
            message = data.decode()
            self.received.append((arrived, message))
            if state in message.split("\n"):
                return arrived

    def states(self) -> list[str]:
        return [m for _, m in self.received]

    def close(self) -> None:
        self.sock.close()


def listen_like_a_socket_unit(path: Path) -> socket.socket:
    """What `ListenStream=` with `DirectoryMode=0700` and `SocketMode=0600` leaves: a listening socket."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


@dataclass
class ManagedDaemon:
    """context-harnessd started the way a Type=notify service is, optionally socket-activated."""

    env: UserEnv
    notify: NotifySocket
    activated: socket.socket | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the daemon without waiting for it."""
        self.log_path = self.env.root / f"daemon-{time.monotonic_ns()}.log"
        env = {**self.env.vars(), "NOTIFY_SOCKET": str(self.notify.path)}
        if self.activated is not None:
            fd = self.activated.fileno()
            argv = [sys.executable, "-c", _ACTIVATE, str(fd)]
            pass_fds: tuple[int, ...] = (fd,)
        else:
            argv = [sys.executable, "-m", "context_harness.daemon"]
            pass_fds = ()
        with open(self.log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        self.procs.append(proc)
        return proc

    def start(self) -> float:
        """Start the daemon and wait for READY=1; returns when READY arrived (monotonic)."""
        self.launch()
        try:
            return self.notify.expect("READY=1")
        except AssertionError:
            raise AssertionError(f"daemon not ready (exit {self.proc.poll()}): {self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(STOP_DEADLINE_S)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def log_events(self) -> list[str]:
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line).get("event", ""))
            except json.JSONDecodeError:
                continue
        return events


@pytest.fixture
def notify_socket(user_env: UserEnv) -> Iterator[NotifySocket]:
    listener = NotifySocket(user_env.root / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def activation_socket(user_env: UserEnv) -> Iterator[socket.socket]:
    sock = listen_like_a_socket_unit(user_env.socket)
    yield sock
    sock.close()


@pytest.fixture
def activated_daemon(
    user_env: UserEnv, notify_socket: NotifySocket, activation_socket: socket.socket
) -> Iterator[ManagedDaemon]:
    daemon = ManagedDaemon(user_env, notify_socket, activation_socket)
    yield daemon
    daemon.kill_all()


@pytest.fixture(params=["socket-activated", "self-bound"])
def managed_daemon(
    request: pytest.FixtureRequest, user_env: UserEnv, notify_socket: NotifySocket
) -> Iterator[ManagedDaemon]:
    activated = listen_like_a_socket_unit(user_env.socket) if request.param == "socket-activated" else None
    daemon = ManagedDaemon(user_env, notify_socket, activated)
    yield daemon
    daemon.kill_all()
    if activated is not None:
        activated.close()


# --- 1. socket activation for real ----------------------------------------------------------------------


def test_chctl_status_answers_through_the_inherited_socket(activated_daemon: ManagedDaemon, user_env: UserEnv) -> None:
    inode = user_env.socket.stat().st_ino
    activated_daemon.start()

    done = chctl(user_env, "status", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["daemon"]["pid"] == activated_daemon.proc.pid
    assert user_env.socket.stat().st_ino == inode, "the daemon must serve the socket it was given, not bind anew"


def test_sigterm_leaves_the_socket_file_to_its_owner_and_a_restart_serves_it_again(
    activated_daemon: ManagedDaemon, user_env: UserEnv
) -> None:
    inode = user_env.socket.stat().st_ino
    activated_daemon.start()
    first_pid = activated_daemon.proc.pid

    assert activated_daemon.stop(signal.SIGTERM) == 0
    assert "daemon_stopped" in activated_daemon.log_events()

    # systemd owns the file: it stays, unchanged, with its mode, and the next daemon serves it.
    assert user_env.socket.exists() and user_env.socket.stat().st_ino == inode
    assert stat.S_IMODE(user_env.socket.stat().st_mode) == 0o600
    activated_daemon.start()
    reply = rpc(user_env.socket, STATUS)
    assert reply["result"]["pid"] == activated_daemon.proc.pid != first_pid


def test_a_request_sent_before_the_daemon_starts_is_answered_once_it_does(
    activated_daemon: ManagedDaemon, user_env: UserEnv
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(START_DEADLINE_S)
        client.connect(str(user_env.socket))  # queued in the listen backlog: nobody accepts yet
        client.sendall(json.dumps(STATUS).encode() + b"\n")

        activated_daemon.launch()
        reply = json.loads(client.makefile("rb").readline())

    assert reply["result"]["pid"] == activated_daemon.proc.pid


# --- 2. readiness ---------------------------------------------------------------------------------------


def test_ready_comes_only_once_the_socket_serves_and_stopping_on_sigterm(
    managed_daemon: ManagedDaemon, user_env: UserEnv
) -> None:
    ready_at = managed_daemon.start()
    # Freeze the daemon the moment it says READY, so what we see next is what was true when it said so.
    managed_daemon.proc.send_signal(signal.SIGSTOP)
    try:
        assert user_env.socket.exists()
        # `daemon_started` is logged after the RPC server has started serving (stderr is flushed per line).
        assert "daemon_started" in managed_daemon.log_events()
    finally:
        managed_daemon.proc.send_signal(signal.SIGCONT)

    reply = rpc(user_env.socket, STATUS, timeout=2)
    assert reply["result"]["pid"] == managed_daemon.proc.pid
    assert time.monotonic() - ready_at < 2
    assert managed_daemon.notify.states() == ["READY=1"]

    managed_daemon.proc.send_signal(signal.SIGTERM)
    managed_daemon.notify.expect("STOPPING=1", STOP_DEADLINE_S)
    assert managed_daemon.proc.wait(STOP_DEADLINE_S) == 0
    assert managed_daemon.notify.states() == ["READY=1", "STOPPING=1"]


# --- 3. SIGHUP = reload ---------------------------------------------------------------------------------


def _store_oauth_token(user_env: UserEnv) -> Path:
    now = time.time()
    tokens = TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets")
    tokens.save(
        Credential(
            name="kept",
            kind="oauth",
            state=TokenState.ACTIVE,
            issuer="https://issuer.invalid",
            token_endpoint="https://issuer.invalid/token",
            client_id="client-kept",
            tokens=OAuthTokens(
                access_token="fake-access-not-a-secret",
                refresh_token="fake-refresh-not-a-secret",
                issued_at=now,
                expires_at=now + 3600,
            ),
        )
    )
    return user_env.ch_home / "tokens" / "kept.json"


def _registry_names(user_env: UserEnv) -> set[str]:
    done = chctl(user_env, "registry", "--json")
    assert done.returncode == 0, done.stderr
    return {server["name"] for server in json.loads(done.stdout)["servers"]}


def _server_row(user_env: UserEnv, name: str) -> dict[str, Any]:
    done = chctl(user_env, "status", "--json")
    assert done.returncode == 0, done.stderr
    return next(row for row in json.loads(done.stdout)["servers"] if row["name"] == name)


def test_sighup_reloads_the_registry_and_keeps_tokens(managed_daemon: ManagedDaemon, user_env: UserEnv) -> None:
    token_file = _store_oauth_token(user_env)
    token_bytes = token_file.read_bytes()
    managed_daemon.start()
    before = _server_row(user_env, "kept")
    assert "reloaded-docs" not in _registry_names(user_env)

    (user_env.ch_home / "registry.json").write_text(
        json.dumps(
            {
                "servers": [
                    {
                        "name": "reloaded-docs",
                        "url": "https://docs.example.invalid/mcp",
                        "description": "added while running",
                    },
                ]
            }
        )
    )
    managed_daemon.proc.send_signal(signal.SIGHUP)

    managed_daemon.notify.expect("RELOADING=1")
    managed_daemon.notify.expect("READY=1")
    assert managed_daemon.notify.states() == ["READY=1", "RELOADING=1", "READY=1"]
    wait_for(lambda: "reloaded-docs" in _registry_names(user_env), 10, 0.1, "the reloaded registry entry")
    assert managed_daemon.proc.poll() is None
    assert token_file.read_bytes() == token_bytes
    after = _server_row(user_env, "kept")
    assert after["state"] == before["state"] == "active"
    assert after["expires_at"] == before["expires_at"]
    assert after["next_refresh_at"] == before["next_refresh_at"]


def test_sighup_with_a_broken_daemon_env_keeps_serving_reloads_the_registry_and_says_ready(
    managed_daemon: ManagedDaemon, user_env: UserEnv
) -> None:
    managed_daemon.start()
    (user_env.ch_home / "daemon.env").write_text("CH_REFRESH_FRACTION=7.25\n")
    (user_env.ch_home / "registry.json").write_text(
        json.dumps(
            [
                {"name": "still-reloaded", "url": "https://docs.example.invalid/mcp"},
            ]
        )
    )

    managed_daemon.proc.send_signal(signal.SIGHUP)

    managed_daemon.notify.expect("RELOADING=1")
    managed_daemon.notify.expect("READY=1")
    assert "still-reloaded" in _registry_names(user_env)
    assert "reload_settings_invalid" in managed_daemon.log_events()
    assert "7.25" not in managed_daemon.log()  # the problem is named, the value is not repeated
    assert managed_daemon.stop() == 0


# --- 4. chctl service on this machine -------------------------------------------------------------------


def _systemd_user_session() -> bool:
    try:
        done = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _installed_daemon() -> Path:
    daemon = Path(sys.executable).parent / "context-harnessd"
    if not daemon.is_file():
        pytest.skip(f"context-harnessd is not installed next to {sys.executable} (pip install -e .)")
    return daemon.absolute()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are Linux-only")
def test_service_install_dry_run_prints_the_packaged_units_with_the_real_daemon_path(user_env: UserEnv) -> None:
    daemon = _installed_daemon()
    unit_dir = user_env.config_home / "systemd" / "user"

    done = chctl(user_env, "service", "install", "--dry-run")

    assert done.returncode == 0, done.stderr
    service = units.template(units.SYSTEMD_SERVICE).replace("@CONTEXT_HARNESSD@", f'"{daemon}"')
    expected = (
        f"would create directory {unit_dir}\n"
        f"would write {unit_dir / units.SYSTEMD_SOCKET}:\n{units.template(units.SYSTEMD_SOCKET)}"
        f"would write {unit_dir / units.SYSTEMD_SERVICE}:\n{service}"
        "would run: systemctl --user daemon-reload\n"
        f"would run: systemctl --user enable --now {units.SYSTEMD_SOCKET} {units.SYSTEMD_SERVICE}\n"
    )
    assert done.stdout == expected
    assert f'ExecStart="{daemon}"\n' in done.stdout and "@CONTEXT_HARNESSD@" not in done.stdout
    assert not unit_dir.exists(), "a dry run writes nothing"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd user sessions are Linux-only")
def test_service_status_without_a_systemd_user_session_says_the_daemon_runs_and_what_a_service_needs(
    user_env: UserEnv, daemon: DaemonProcess
) -> None:
    if _systemd_user_session():
        pytest.skip("this machine has a systemd user session: `chctl service status` would report it")

    done = chctl(user_env, "service", "status")

    assert done.returncode == 0, done.stderr
    assert "error[" not in done.stdout + done.stderr
    assert done.stdout.startswith("service:   none: systemd user session not available\n")
    assert daemon.proc is not None
    assert f"daemon:    running, pid {daemon.proc.pid}: started by chctl, not as a service" in done.stdout
    assert "`chctl service install` needs" in done.stdout
