"""File descriptors: the soft RLIMIT_NOFILE raised to the hard limit at start, how many are left, and the
event loop's EMFILE reports (a refused accept, retried every second by asyncio) logged once a minute, not once
per attempt."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import sys
from typing import Any

from context_harness.primitives.throttled_log import ThrottledLog

# macOS refuses RLIM_INFINITY (launchd's usual hard limit) as a soft limit: OPEN_MAX is the most it takes.
MACOS_OPEN_MAX = 10240
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
_FD_DIR = "/proc/self/fd" if sys.platform.startswith("linux") else "/dev/fd"

_exhausted = ThrottledLog("descriptors_exhausted")


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit allows (a desktop session starts us at 1024, which
    a few hundred bridges and their connections would use up); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (hard, MACOS_OPEN_MAX):  # the hard limit; else (macOS said no) OPEN_MAX
        too_high = wanted == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and wanted > hard)
        if too_high or (soft != resource.RLIM_INFINITY and wanted <= soft):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            continue
        return soft, wanted
    return soft, soft


def descriptors_left() -> int:
    """Descriptors this process may still open (0 when it cannot even look)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    try:
        used = len(os.listdir(_FD_DIR))
    except OSError:
        return 0
    return soft - used


def out_of_descriptors(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS


def note_exhausted(where: str) -> None:
    """Log that the descriptors ran out, throttled: a flood of connections makes this happen per attempt."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _exhausted.note(where=where, limit=soft)


def handle_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: EMFILE/ENFILE (asyncio's "socket.accept() out of system resource", with a
    traceback, at every retry) throttled to one line a minute; everything else as asyncio logs it."""
    if out_of_descriptors(context.get("exception")):
        note_exhausted(str(context.get("message", "event loop")))
        return
    loop.default_exception_handler(context)
