"""chctl on a pseudo-terminal, as a person runs it: a TTY on stdin, stdout and stderr, a window size, Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

from tests.support.env import UserEnv


class Terminal:
    """One chctl process on a pty. Everything it writes (stdout and stderr alike) collects in `output`."""

    def __init__(
        self,
        env: UserEnv,
        *args: str,
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
        columns: int = 100,
    ) -> None:
        variables = {**env.vars(), "CH_NO_AUTOSTART": "1", "TERM": "xterm", **(extra_env or {})}
        argv = [sys.executable, "-m", "context_harness.client.chctl", *args]
        pid, fd = pty.fork()
        if pid == 0:  # the child: its controlling terminal is the pty
            try:
                # A shell gives its foreground job the default Ctrl-C; a test runner started in the
                # background (no job control) has SIGINT ignored, and that would be inherited.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
                os.chdir(cwd or env.project)
                os.execve(argv[0], argv, variables)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = ""
        self.returncode: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.output += chunk.decode(errors="replace")
        return True

    def read_until(self, needle: str, deadline_s: float = 20.0, start: int = 0) -> str:
        """Read until `needle` appears in the output after `start`; the output so far."""
        deadline = time.monotonic() + deadline_s
        while needle not in self.output[start:]:
            if time.monotonic() > deadline or not self._read(min(0.2, deadline_s)):
                raise AssertionError(f"{needle!r} did not appear; output so far:\n{self.output}")
        return self.output

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, deadline_s: float = 20.0) -> int:
        """Read the rest of the output and reap the child; its exit status (128 + N for signal N)."""
        deadline = time.monotonic() + deadline_s
        while True:
            if not self._read(0.05):
                time.sleep(0.01)  # the terminal is closed: only the exit is left to wait for
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
                assert self.returncode is not None
                return self.returncode
            if time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"chctl did not exit within {deadline_s}s; output:\n{self.output}")

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        if self.returncode < 0:
            self.returncode = 128 - self.returncode
        while self._read(0):  # what is still buffered in the pty
            pass

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.returncode = -9
        os.close(self.fd)
        self.fd = -1
