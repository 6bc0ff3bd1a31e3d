"""A refresh the server did not answer in time may still be answered: it is waited for, and its refresh token is
not sent again meanwhile.

A server that rotates refresh tokens spends the one we send the moment it handles the request. When the server
hangs (a stopped process, a stalled database), the request waits in its socket; had we given up on it and sent the
same refresh token again, the server would handle both once it runs again, and the second is a replay: a server with
reuse detection (RFC 9700 §4.14.2) then revokes the whole grant, and only a new login helps. So a request past its
deadline is not abandoned: its connection stays open for the answer, up to `LATE_ANSWER_S`, and until then no
refresh with that token is sent. A late answer is what the next attempt gets (`on_late` asks for one at once): new
tokens are stored as from any refresh. Only a request that ended with no answer (the connection failed, or
`LATE_ANSWER_S` passed) lets the next attempt send the token again — a server that then handles both revokes the
grant, as before. A request that got no connection within the deadline never left, and is not waited for.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from context_harness.oauth.token_client import RefreshOutcome, TransientError

log = structlog.get_logger(__name__)

# How long the answer to a refresh is waited for in all: a server silent for longer is asked again.
LATE_ANSWER_S = 300.0

Answer = tuple[RefreshOutcome, str | None]  # the outcome, and the way the client secret was sent (token_auth)
# Sends the refresh: its whole answer within the first number of seconds, its connection within the second.
Send = Callable[[float, float], Coroutine[Any, Any, Answer]]


@dataclass(slots=True)
class _Unanswered:
    token: str  # a digest of the refresh token sent: a new login's token is not this one
    task: asyncio.Task[Answer]
    sent_at: float  # monotonic


class UnansweredRefreshes:
    """One service's refreshes past their deadline, by name (a server's, an identity provider's)."""

    def __init__(self, on_late: Callable[[str], Awaitable[object]]) -> None:
        self._on_late = on_late  # `refresh_once(name, force=True)`: picks the late answer up
        self._waiting: dict[str, _Unanswered] = {}
        self._follow_ups: set[asyncio.Task[object]] = set()

    def waiting(self, name: str) -> bool:
        found = self._waiting.get(name)
        return found is not None and not found.task.done()

    async def refresh(self, name: str, refresh_token: str, send: Send, timeout_s: float) -> Answer:
        """The answer to a refresh of `name` with `refresh_token`: the late answer to one sent earlier if it
        came; a TransientError while it is still awaited; else the answer to a new request, waited for
        `timeout_s` (then it goes on waiting, and the caller hears a TransientError)."""
        token = hashlib.sha256(refresh_token.encode()).hexdigest()
        earlier = self._waiting.get(name)
        if earlier is not None and earlier.token == token:
            if not earlier.task.done():
                waited = time.monotonic() - earlier.sent_at
                return still_awaited(f"sent {waited:.0f} s ago"), None
            del self._waiting[name]
            answer = earlier.task.result() if not earlier.task.cancelled() else None
            if answer is not None and not isinstance(answer[0], TransientError):  # answered: what it said counts
                log.info("token_refresh_answered_late", name=name, outcome=type(answer[0]).__name__)
                return answer
        elif earlier is not None:
            del self._waiting[name]  # a token stored since (a new login): the earlier answer is of no use
        task: asyncio.Task[Answer] = asyncio.get_running_loop().create_task(send(LATE_ANSWER_S, timeout_s))
        await asyncio.wait({task}, timeout=timeout_s)
        if task.done():
            return task.result()
        self._waiting[name] = _Unanswered(token, task, time.monotonic())
        task.add_done_callback(lambda done: self._answered(name, done))
        log.warning("token_refresh_unanswered", name=name, timeout_s=timeout_s, waits_s=LATE_ANSWER_S)
        return still_awaited(f"no answer within {timeout_s:g} s"), None

    def _answered(self, name: str, task: asyncio.Task[Answer]) -> None:
        """The late answer came: it is taken now, not at the next planned attempt. (No answer at all: the next
        planned attempt sends anew, after its backoff.)"""
        awaited = self._waiting.get(name)
        if awaited is None or awaited.task is not task:  # a token stored since: this answer is of no use
            return
        if task.cancelled() or isinstance(task.result()[0], TransientError):
            return
        follow_up = asyncio.get_running_loop().create_task(self._take(name))
        self._follow_ups.add(follow_up)
        follow_up.add_done_callback(self._follow_ups.discard)

    async def _take(self, name: str) -> None:
        try:
            await self._on_late(name)
        except Exception:  # a bug of ours: the next planned attempt takes the answer
            log.exception("late_refresh_answer_not_taken", name=name)


def still_awaited(since: str) -> TransientError:
    return TransientError(
        f"the token endpoint did not answer the last refresh ({since}); its answer is still awaited, and the "
        "refresh token is not sent again until it comes"
    )
