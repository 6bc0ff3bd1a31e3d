"""One log line for a burst of the same event: what a peer can make happen a thousand times a second (a
refused connection, an exhausted descriptor table) must not write a thousand lines a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# At most one line per event this often; the line after a quiet spell says how many were left out.
LOG_EVERY_S = 60.0


class ThrottledLog:
    """A warning logged at once the first time, then at most once every `every_s`, with `suppressed` = how many
    occurrences since the last line were not logged (told at the end of the window, even if none follows)."""

    def __init__(self, event: str, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.event = event
        self.every_s = every_s
        self.clock = clock
        self._next_at = float("-inf")
        self._suppressed = 0
        self._context: dict[str, Any] = {}
        self._flush: asyncio.TimerHandle | None = None

    def note(self, **context: Any) -> None:
        now = self.clock()
        if now >= self._next_at:
            self._write(context)
            self._next_at = now + self.every_s
            return
        self._suppressed += 1
        self._context = context
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # outside the loop: told with the next line
            self._flush = loop.call_later(self._next_at - now, self._end_window)

    def _end_window(self) -> None:
        self._flush = None
        if self._suppressed:
            self._write(self._context)
            self._next_at = self.clock() + self.every_s

    def _write(self, context: dict[str, Any]) -> None:
        extra = {"suppressed": self._suppressed} if self._suppressed else {}
        log.warning(self.event, **context, **extra)
        self._suppressed = 0
