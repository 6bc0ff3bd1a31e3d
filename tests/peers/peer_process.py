"""Start a peer server as a subprocess, wait for its JSON ready line, stop it cleanly.

Every peer prints exactly one JSON object on one stdout line once it listens, and exits when its
stdin closes, so a peer never outlives the test process even if pytest is killed.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

READY_TIMEOUT_S = 60.0  # node + oidc-provider start in ~0.5 s, python + mcp in ~1.5 s; 2 overloaded cores are slow
STOP_TIMEOUT_S = 5.0


class PeerStartError(RuntimeError):
    """The peer exited or stayed silent before printing its ready line; see the log file."""


class PeerSilent(PeerStartError):
    """The peer was still running but printed nothing before the deadline."""


class PeerProcess:
    """A running peer: its ready-line payload, its log file, and a way to stop it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        ready: dict[str, Any],
        log_path: Path,
        log: IO[bytes],
        drain: threading.Thread,
    ) -> None:
        self.process = process
        self.ready = ready
        self.log_path = log_path
        self._log = log
        self._drain = drain

    def stop(self) -> None:
        """Close stdin (the peer's exit signal), then escalate to SIGTERM and SIGKILL if needed."""
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._drain.join(STOP_TIMEOUT_S)
        self._log.close()


def _copy_rest(stream: IO[bytes], log: IO[bytes]) -> None:
    # Keep draining stdout after the ready line so a chatty peer never blocks on a full pipe.
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        log.flush()


def start_peer(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> PeerProcess:
    """Run `argv`, wait (with a deadline) for its JSON ready line and return the running peer.

    stderr and any later stdout go to `log_path`; the path is kept for debugging a failed test. A peer that
    stays silent to the deadline is killed and started once more: node has been seen, rarely, to hang at start
    with nothing printed (and the same process, started again, answers in a second).
    """
    try:
        return _start_once(argv, log_path=log_path, env=env, cwd=cwd, timeout=timeout)
    except PeerSilent:
        with open(log_path, "ab") as log:
            log.write(b"\n--- no ready line: killed, starting once more ---\n")
        return _start_once(argv, log_path=log_path, env=env, cwd=cwd, timeout=timeout)


def _start_once(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None, cwd: Path | None, timeout: float
) -> PeerProcess:
    log = open(log_path, "ab")  # closed by PeerProcess.stop() or on a failed start
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                _abort(process, log)
                raise PeerSilent(f"{argv[:2]} printed no ready line within {timeout} s; log: {log_path}")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                _abort(process, log)
                raise PeerStartError(f"{argv[:2]} exited before it was ready; log: {log_path}")
            line += chunk
    first, _, rest = line.partition(b"\n")
    log.write(rest)
    try:
        ready = json.loads(first)
    except json.JSONDecodeError as error:
        _abort(process, log)
        raise PeerStartError(f"{argv[:2]} printed a ready line that is not JSON; log: {log_path}") from error
    drain = threading.Thread(target=_copy_rest, args=(process.stdout, log), daemon=True)
    drain.start()
    return PeerProcess(process, ready, log_path, log, drain)


def _abort(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    process.kill()
    process.wait()
    log.close()
