"""What chctl prints: errors with a hint, JSON, relative times, aligned tables. Standard library only."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any


# C0 and C1 control characters and DEL: an ESC sequence from a server must not reach the terminal (it can
# retitle the window, rewrite what is shown, or on some terminals feed input back).
_CONTROL = {c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: object) -> str:
    """Text a server (or anyone) sent, safe to print: control characters removed."""
    return str(text).translate(_CONTROL)


def print_error(code: str, message: str, hint: str | None = None) -> int:
    print(f"error[{printable(code)}]: {printable(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {printable(hint)}", file=sys.stderr)
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
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
