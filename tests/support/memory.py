"""A process's resident memory from /proc: now (VmRSS) and its peak (VmHWM), which can be reset to now, so a
test or a benchmark measures the peak of one attack over the idle process."""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024


def resident(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of `pid`, in bytes."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024
    return figures["VmRSS"], figures["VmHWM"]


def reset_peak(pid: int) -> int:
    """Make `pid`'s peak its resident memory now (Linux: clear_refs 5); returns that resident memory."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return resident(pid)[0]
