"""The real daemon as a subprocess, and the real chctl talking to it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.env import UserEnv

START_DEADLINE_S = 60.0  # its imports take 10 s and more on two loaded cores; a start that fails ends sooner


def wait_for(predicate: Any, deadline_s: float, interval_s: float = 0.02, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(interval_s)


def socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class DaemonProcess:
    env: UserEnv
    extra_env: dict[str, str] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)  # e.g. an `unshare` prefix
    drop_env: tuple[str, ...] = ()  # variables the daemon must not inherit
    python: str = sys.executable  # another user's own interpreter (tests/test_remote_ssh.py)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> DaemonProcess:
        self.log_path = self.env.root / f"daemon-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.wrapper, self.python, "-m", "context_harness.daemon"],
                env={k: v for k, v in {**self.env.vars(), **self.extra_env}.items() if k not in self.drop_env},
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for(
                lambda: socket_answers(self.env.socket) or self.proc.poll() is not None,
                START_DEADLINE_S,
                what="daemon socket",
            )
        except AssertionError:
            self.stop(signal.SIGKILL)  # no fixture stops a daemon whose start failed
            raise
        assert self.proc.poll() is None, f"daemon exited early: {self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def chctl(
    env: UserEnv,
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
    autostart: bool = False,
) -> subprocess.CompletedProcess[str]:
    """chctl as a user runs it; it starts no daemon unless `autostart` (then stop it: `chctl daemon stop`)."""
    no_autostart = {} if autostart else {"CH_NO_AUTOSTART": "1"}
    return subprocess.run(
        [sys.executable, "-m", "context_harness.client.chctl", *args],
        env={**env.vars(), **no_autostart, **(extra_env or {})},
        cwd=cwd or env.project,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rpc(path: Path, request: Any, raw: bytes | None = None, timeout: float = 10) -> Any:
    """Send one line (a JSON request, or raw bytes) and read one reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(raw if raw is not None else json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data) if data else None
