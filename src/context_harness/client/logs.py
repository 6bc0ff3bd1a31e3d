"""`chctl logs [-n N] [-f]`: the daemon's log, wherever it goes.

Under systemd (the user unit is installed) that is the journal; under launchd the log file its plist names;
otherwise `CH_HOME/daemon.log`, where a daemon that chctl started writes. The daemon logs JSON lines when its
stderr is not a terminal: on a terminal they are shown as `time level event key=value ...`, in a pipe as they
are. Standard library only.
"""

from __future__ import annotations

import os
import sys
import time

from context_harness.client import wire
from context_harness.client.output import paint, use_colour
from context_harness.client.rpc_client import RpcError, state_home

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator
    from typing import Any

SYSTEMD_UNIT = "context-harness.service"  # as service_units names it (not imported: it pulls in re, pathlib)
LAUNCHD_LOG = ("Library", "Logs", "context-harness", "daemon.log")
LAUNCHD_PLIST = ("Library", "LaunchAgents", "ai.context-harness.daemon.plist")
FOLLOW_POLL_S = 0.2  # how often `-f` looks for new lines in a file
LEVEL_COLOURS = {"warning": "yellow", "error": "red", "critical": "red"}


def add_logs_parser(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="show the daemon's log (-f to follow)",
        description="Show the daemon's log: `journalctl --user -u context-harness` when the systemd unit is "
        "installed, the launchd log on macOS, else ~/.context-harness/daemon.log (chctl-started daemon).",
    )
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="show the last N lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep showing new lines as they come; Ctrl-C stops")
    p.set_defaults(func=cmd_logs)


def log_source(*, platform: str, home: str, config_home: str, ch_home: str) -> list[str] | str:
    """The journalctl command (a list) or the log file (a str) that holds the daemon's log."""
    unit = os.path.join(config_home, "systemd", "user", SYSTEMD_UNIT)
    if platform.startswith("linux") and os.path.exists(unit):
        return ["journalctl", "--user", "-u", SYSTEMD_UNIT, "-o", "cat", "--no-pager"]
    if platform == "darwin" and os.path.exists(os.path.join(home, *LAUNCHD_PLIST)):
        return os.path.join(home, *LAUNCHD_LOG)
    return os.path.join(ch_home, "daemon.log")


def _config_home(home: str) -> str:
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    return xdg if os.path.isabs(xdg) else os.path.join(home, ".config")


def cmd_logs(args: argparse.Namespace) -> int:
    home = os.path.expanduser("~")
    source = log_source(platform=sys.platform, home=home, config_home=_config_home(home), ch_home=state_home())
    pretty = sys.stdout.isatty()
    colour = use_colour()
    if isinstance(source, list):
        lines = _journal(source, args.lines, follow=args.follow)
    elif not os.path.exists(source):
        raise RpcError(
            "NOT_FOUND",
            f"no daemon log at {source}",
            "the daemon writes there when chctl starts it (`chctl daemon start`); "
            "`chctl daemon run` shows it in the terminal",
        )
    else:
        lines = _file(source, args.lines, follow=args.follow)
    for line in lines:
        print(render(line, colour) if pretty else line, flush=args.follow)
    return 0


def _file(path: str, count: int, *, follow: bool) -> Iterator[str]:
    from collections import deque

    with open(path, "rb") as log:  # bytes: a line the daemon is still writing is kept until it ends
        yield from (_line(raw) for raw in deque(log, maxlen=max(0, count)))
        pending = b""
        while follow:
            chunk = log.readline()
            if chunk.endswith(b"\n"):
                yield _line(pending + chunk)
                pending = b""
                continue
            pending += chunk
            if os.fstat(log.fileno()).st_size < log.tell():  # truncated: start again from the top
                log.seek(0)
                pending = b""
            time.sleep(FOLLOW_POLL_S)


def _line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\n")


def _journal(argv: list[str], count: int, *, follow: bool) -> Iterable[str]:
    import subprocess

    command = [*argv, "-n", str(max(0, count)), *(["-f"] if follow else [])]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        hint = "the systemd unit is installed, so the daemon logs to the journal: install journalctl to read it"
        raise RpcError("NOT_FOUND", "journalctl not found", hint) from None
    assert proc.stdout is not None
    with proc:
        yield from (line.rstrip("\n") for line in proc.stdout)


def render(line: str, colour: bool) -> str:
    """A JSON log line as `HH:MM:SS level event key=value ...` (local time); any other line as it is."""
    try:
        event = wire.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict) or "event" not in event:
        return line
    fields = dict(event)
    stamp = _local_time(str(fields.pop("timestamp", "")))
    level = str(fields.pop("level", "info"))
    message = str(fields.pop("event"))
    rest = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
    shown_level = level.ljust(7)
    if colour and level in LEVEL_COLOURS:
        shown_level = paint(shown_level, LEVEL_COLOURS[level])
    return f"{stamp} {shown_level} {message}" + (f" {rest}" if rest else "")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else wire.dumps(value)
    return text if text and " " not in text else wire.dumps(text)


def _local_time(iso: str) -> str:
    """'2026-11-28T10:52:05.123Z' (UTC) as local 'HH:MM:SS'; the text itself if it is not one."""
    try:
        utc = time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return iso
    import calendar

    return time.strftime("%H:%M:%S", time.localtime(calendar.timegm(utc)))
