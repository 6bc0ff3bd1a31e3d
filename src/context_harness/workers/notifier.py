"""Tell people and scripts about token events.

- The notify command (CH_NOTIFY_COMMAND, else notify-send / osascript when present) runs when a person must
  act (`needs_reauth`; `expiring`: a token without refresh token expires soon; `url_changed`: a config's
  entry now points at another URL), at most once per 15 minutes per server while that state lasts.
- The event hook (CH_EVENT_COMMAND) gets every event (`TokenEvent`): new, refreshed, retrying, expiring,
  needs_reauth, url_changed, revoked.
Both get CH_SERVER, CH_STATE and CH_MESSAGE in their environment, run without a shell, and are killed after 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable

import structlog

from context_harness.primitives.oauth import TokenEvent

log = structlog.get_logger(__name__)

COMMAND_TIMEOUT_S = 10.0
# A person told once needs no reminder every retry; one every 15 minutes while it lasts is plenty.
NOTIFY_INTERVAL_S = 15 * 60


def default_notify_command() -> list[str] | None:
    if sys.platform == "darwin" and shutil.which("osascript"):
        return ["osascript", "-e", 'display notification (system attribute "CH_MESSAGE") with title "context-harness"']
    if shutil.which("notify-send"):
        return ["notify-send", "--app-name=context-harness", "context-harness"]
    return None


class Notifier:
    def __init__(
        self,
        notify_command: list[str] | None,
        event_command: list[str] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notify_command = notify_command if notify_command is not None else default_notify_command()
        self.event_command = event_command
        self.clock = clock
        self._last_notified: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def configure(self, notify_command: list[str] | None, event_command: list[str] | None) -> None:
        """New commands (a reload); no notify command set means the desktop default, not the command that
        was set before."""
        self.notify_command = notify_command if notify_command is not None else default_notify_command()
        self.event_command = event_command

    def token_event(self, server: str, event: TokenEvent, message: str, *, person: bool = True) -> None:
        """`person` off: the person was told already (through the identity provider the server waits for)."""
        if self.event_command:
            self._spawn(self.event_command, server, event, message)
        if not person:
            return
        # `expiring` then `needs_reauth` within the interval is one problem: the person is told once.
        if not event.needs_a_person:
            self._last_notified.pop(server, None)  # the state ended: the next problem is news again
            return
        now = self.clock()
        last = self._last_notified.get(server)
        if last is not None and now - last < NOTIFY_INTERVAL_S:
            return
        self._last_notified[server] = now
        if self.notify_command is None:
            log.warning("person_needed", server=server, state=event, message=message)
            return
        argv = list(self.notify_command)
        if argv and os.path.basename(argv[0]) == "notify-send":
            argv.append(message)  # notify-send takes the body as an argument; others read CH_MESSAGE
        self._spawn(argv, server, event, message)

    def _spawn(self, argv: list[str], server: str, event: str, message: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(_run(argv, server, event, message))
        except RuntimeError:
            return  # no loop (a synchronous test): nothing to notify with
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Wait for commands still running (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


async def _run(argv: list[str], server: str, event: str, message: str) -> None:
    env = {**os.environ, "CH_SERVER": server, "CH_STATE": event, "CH_MESSAGE": message}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.warning("notify_command_failed", command=argv[0], error=exc.strerror)
        return
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            code = await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.warning("notify_command_timed_out", command=argv[0], server=server)
        return
    log.info("notify_command_ran", command=argv[0], server=server, state=event, exit_code=code)
