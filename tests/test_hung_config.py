"""A config on a hung mount (a FIFO stands in: opening it blocks) costs only its own write: the daemon
keeps answering, reports the write, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time

from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv


def test_a_hung_config_does_not_freeze_the_daemon(user_env: UserEnv) -> None:
    other = user_env.root / "other"
    other.mkdir()
    process = DaemonProcess(user_env).start()
    try:
        assert chctl(user_env, "init").returncode == 0
        assert chctl(user_env, "init", "--project", str(other)).returncode == 0
        for target in ([], ["--project", str(other)]):
            added = chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real", *target)
            assert added.returncode == 0, added.stderr
    finally:
        process.stop()
    hung = other / "opencode.json"
    hung.unlink()
    os.mkfifo(hung)  # what a read on a dead NFS mount does: block
    process = DaemonProcess(user_env, extra_env={"CH_CONFIG_IO_TIMEOUT_S": "1"}).start()
    try:
        # At start every bound config is checked; this one hangs, in its own thread.
        started = time.monotonic()
        status = chctl(user_env, "status", "--json", timeout=20)
        assert status.returncode == 0, status.stderr
        assert time.monotonic() - started < 15  # answered, not stuck behind the hung file

        def reported() -> str:
            [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
            return str(row["last_error"] or "")

        assert "did not answer" in wait_for(reported, 15, interval_s=0.2, what="the hung write reported")
        assert str(hung.resolve()) in reported()
        # Requests that read or write the hung config fail alone, with TIMEOUT; the rest keep working.
        for args in (["list"], ["add", "exa"], ["remove", "context7"]):
            done = chctl(user_env, *args, "--project", str(other), timeout=20)
            assert done.returncode != 0 and "error[TIMEOUT]" in done.stderr, (args, done.stderr)
            assert chctl(user_env, "list", timeout=20).returncode == 0  # the other config answers at once
        assert chctl(user_env, "status", timeout=20).returncode == 0
        assert process.stop(signal.SIGTERM, timeout=15) == 0  # a thread stuck on the file does not hold it up
    finally:
        process.stop(signal.SIGKILL)
