"""What chctl prints: errors with a hint, JSON, relative times, aligned tables. Standard library only."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any, TextIO

# Every error says what to do next. The daemon's own hints name the server and the flags; these are for
# the errors that come without one (a low-level network failure, a bug).
FALLBACK_HINTS = {
    "NETWORK": "check the network (proxy, VPN, DNS) and try again; `chctl logs` has the details",
    "TIMEOUT": "try again; `chctl logs` has the details",
    "INTERNAL": "this is a bug: `chctl logs` shows what happened; please report it with that",
}
DEFAULT_HINT = "`chctl status` shows every server's state; `chctl doctor` checks the setup"
HINT_PREFIX = "  hint: "  # the one indentation for hints, in errors and in `chctl doctor` alike


def print_error(code: str, message: str, hint: str | None = None, file: TextIO | None = None) -> int:
    out = sys.stderr if file is None else file
    print(f"error[{code}]: {message}", file=out)
    print(HINT_PREFIX + (hint or FALLBACK_HINTS.get(code, DEFAULT_HINT)), file=out)
    return 1


def print_json(value: Any) -> None:
    import json  # only for --json output: json costs ~5 ms of start-up

    print(json.dumps(value, indent=2, sort_keys=False))


def when(ts: float | None, now: float | None = None) -> str:
    """A Unix time as a short relative duration: 'in 14m', '3s ago', '-'."""
    if ts is None:
        return "-"
    delta = ts - (time.time() if now is None else now)
    span = abs(delta)
    if span < 90:
        text = f"{span:.0f}s"
    elif span < 90 * 60:
        text = f"{span / 60:.0f}m"
    elif span < 36 * 3600:
        text = f"{span / 3600:.1f}h"
    else:
        text = f"{span / 86400:.1f}d"
    return f"in {text}" if delta >= 0 else f"{text} ago"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
