"""What chctl prints: errors with a hint, JSON, relative times, aligned tables. Standard library only."""

from __future__ import annotations

import os
import sys
import time

from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from collections.abc import Sequence
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


def print_error(code: str, message: str, hint: str | None = None, *, file: TextIO | None = None) -> int:
    """`error[CODE]: message` and the hint line (a fallback when there is none) to stderr or `file`; returns 1."""
    out = sys.stderr if file is None else file
    print(f"{error_tag(code)}: {printable(message)}", file=out)
    print_hint(hint or FALLBACK_HINTS.get(code, DEFAULT_HINT), file=out)
    return 1


def error_tag(code: str) -> str:
    """How chctl names an error code wherever it shows one: `error[CODE]`."""
    return f"error[{printable(code)}]"


def print_hint(hint: str, *, file: TextIO) -> None:
    """The indented `hint:` line that says what to do next, under an error or a failed check."""
    print(HINT_PREFIX + printable(hint), file=file)


def print_json(value: Any) -> None:
    import json  # only for --json output: json costs ~5 ms of start-up

    print(json.dumps(value, indent=2, sort_keys=False))


def say_made_private(made_private: dict[str, list[str]]) -> None:
    """Once, after the write that did it: a config that now holds a secret inline lost group and other access."""
    for path, (before, after) in made_private.items():
        print(
            f"  {printable(path)} is now mode {after} (was {before}): it holds a secret inline, so only you may read it"
        )


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


COLOURS = {"green": "\x1b[32m", "yellow": "\x1b[33m", "red": "\x1b[31m"}
RESET = "\x1b[0m"
MIN_CUT_WIDTH = 12  # a column cut to fit the terminal keeps at least this much


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and (sys.stdout if stream is None else stream).isatty()


def paint(text: str, colour: str) -> str:
    return COLOURS[colour] + text + RESET


def home_as_tilde(path: str) -> str:
    """`path` with the home directory written `~`: a shorter column."""
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if home != "/" and path.startswith(home + os.sep) else path


def terminal_width() -> int | None:
    """The terminal's width when stdout is one (COLUMNS wins); None when piped: then nothing is cut."""
    if not sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return None


def table(
    rows: list[list[str]],
    colours: list[str | None] | None = None,
    colour_column: int = 0,
    width: int | None = None,
    cut: int | None = None,
    fit: Sequence[tuple[str, int]] = (),
) -> str:
    """Aligned columns, two spaces apart. `colours` paints one cell per row but the header (a COLOURS name,
    or None), in `colour_column`. To fit in `width`, as `gh` does, the steps of `fit` are taken in order
    until the lines fit: ("cut", i) lets column i be shortened with '…' (down to MIN_CUT_WIDTH), ("drop", i)
    leaves column i out. `cut=i` alone is `fit=[("cut", i)]`."""
    rows = [[printable(cell) for cell in row] for row in rows]
    steps = list(fit) if cut is None else [("cut", cut), *fit]
    shown = list(range(len(rows[0])))
    cuts: list[int] = []
    widths = _fitted(rows, shown, cuts, width)
    for action, column in steps:
        if width is None or _line_width(widths, shown) <= width:
            break
        if action == "drop":
            shown.remove(column)
        else:
            cuts.append(column)
        widths = _fitted(rows, shown, cuts, width)
    lines = []
    for index, row in enumerate(rows):
        cells = [_cut(row[i], widths[i]).ljust(widths[i]) for i in shown]
        colour = colours[index - 1] if colours and index > 0 else None
        if colour and colour_column in shown:
            at = shown.index(colour_column)
            text = _cut(row[colour_column], widths[colour_column])
            cells[at] = paint(text, colour) + cells[at][len(text) :]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _line_width(widths: dict[int, int], shown: list[int]) -> int:
    return sum(widths[i] for i in shown) + 2 * (len(shown) - 1)


def _fitted(rows: list[list[str]], shown: list[int], cuts: list[int], width: int | None) -> dict[int, int]:
    """Each shown column's width: its widest cell, less what the `cuts` columns give up (in that order) to fit
    in `width`; a cut column keeps its header whole and at least MIN_CUT_WIDTH."""
    widths = {i: max(len(row[i]) for row in rows) for i in shown}
    for column in (c for c in cuts if c in shown):
        excess = _line_width(widths, shown) - width if width is not None else 0
        floor = max(MIN_CUT_WIDTH, len(rows[0][column]))
        if excess > 0 and widths[column] > floor:
            widths[column] = max(floor, widths[column] - excess)
    return widths


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# `chctl status`'s and `chctl idp list`'s SECRET AT column: each place a secret rests, in a word (`--json` and
# doctor give the paths).
PLACE_WORDS = {
    "keychain": "keychain",
    "token_file": "token file",
    "config": "config",
    "secret_file": "{file:}",
    "client_file": "client file",
    "idp_file": "idp file",
}


def secret_words(places: list[dict[str, Any]]) -> str:
    if not places:
        return "-"
    words = [PLACE_WORDS.get(p["where"], p["where"]) + ("!" if p.get("problem") else "") for p in places]
    return " + ".join(dict.fromkeys(words)) + (" only" if set(words) == {"keychain"} else "")
