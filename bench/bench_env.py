"""What every benchmark needs: a throw-away user environment, the real daemon as a subprocess, the
daemon's memory and CPU from /proc, and a way to print figures (a short table, then one JSON line).

The scripts run from the repository root (`.venv/bin/python bench/NAME.py`); this module puts the root
on sys.path so `tests.support` and `tests.peers` import as they do under pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.daemon import DaemonProcess  # noqa: E402
from tests.support.env import UserEnv, make_user_env  # noqa: E402
from tests.support.memory import resident  # noqa: E402

__all__ = [
    "DaemonProcess",
    "UserEnv",
    "cpu_seconds",
    "median_ms",
    "proc_status",
    "report",
    "serve_on_loopback",
    "running_daemon",
    "user_env",
]

# The daemon as a user runs it: info-level logs (the test env asks for debug).
QUIET_DAEMON = {"CH_LOG_LEVEL": "info", "CH_LOG_FORMAT": "json"}
MIB = 1024 * 1024


@contextmanager
def user_env() -> Iterator[UserEnv]:
    """HOME, CH_HOME, XDG_RUNTIME_DIR and XDG_CONFIG_HOME under one temp dir, removed afterwards."""
    # A short prefix in /tmp: the socket path must stay under ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="chb", dir="/tmp") as root:
        yield make_user_env(Path(root))


@contextmanager
def running_daemon(env: UserEnv, extra_env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(env, extra_env={**QUIET_DAEMON, **(extra_env or {})}).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in bytes."""
    rss, peak = resident(pid)
    return {"VmRSS": rss, "VmHWM": peak}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def report(title: str, rows: list[tuple[str, Any]], figures: dict[str, Any]) -> None:
    """A short table a person reads, then the same figures as one JSON line for tools."""
    print(title)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print(json.dumps({"bench": Path(sys.argv[0]).stem, **figures}))


def serve_on_loopback(app: web.Application) -> None:
    """Serve `app` on 127.0.0.1 until killed, after printing its port (a peer run as a process of its own)."""

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())
