"""What a relay session needs from the daemon and gives back: the credential it sends, the way it answers the
client, the counters `chctl status` shows, and the failures it answers with."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from context_harness.primitives.result import Failure, Result
from context_harness.upstream.messages import Message

Deliver = Callable[[Message], Coroutine[Any, Any, None]]


class Credentials(Protocol):
    """The server's credential as the daemon holds it."""

    def header(self) -> tuple[str, str] | None:
        """The header to send now, or None (no credential: send without one)."""

    async def renew(self, rejected: str | None) -> Result[None]:
        """The server refused the header value `rejected`: get a better one (a refresh, at most one at a
        time across the daemon), or a Failure that says what a person must do."""

    async def scope_refused(self, scope: str | None) -> Failure:
        """The server refused a call for lack of `scope` (403 `insufficient_scope`): what a person must do."""

    async def answered(self, status: int, sent: str | None) -> None:
        """The server's verdict on the header value `sent` (None: none was sent): a success, a 403 other than
        `insufficient_scope`, or a 401 that no renewal cured. The daemon keeps a refusal for `chctl status` until
        a request succeeds."""


class RelayFailure(Exception):
    """A client request cannot be carried; `failure` says why and what to do."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


@dataclass(slots=True)
class Counters:
    """What `chctl status` shows for a live bridge; the relay keeps it in the server's `ServerState`."""

    transport: Literal["streamable-http", "sse"] | None = None  # None until the first exchange
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    renewals: int = 0
    reinitializations: int = 0
    last_error: str | None = None
