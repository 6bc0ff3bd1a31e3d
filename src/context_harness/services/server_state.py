"""What the daemon knows about each server right now, in one record per server, and the one channel
that says a server changed.

The credential itself stays on disk (the token store is the truth, across processes and restarts); a
`ServerState` holds what is live: the refresh phase, the failed attempts the backoff grows with, the
refresher's next wake-up, the last failed login, the configs whose last write failed and the counters of
the live bridges carrying it. Everything
that answers "why does this server say *needs login*?" or "when is its next refresh?" is read here.

`await ServerStates.changed(name, ...)` is the one call for "this server's credential or state changed". Its
listeners are wired once, in `build_services`, and awaited in that order: the publisher (it writes the header
into the configs when the credential is new), the refresher (it re-plans), the notifier and event hook (they
hear the event). So the order "refresh token on disk, then headers written, then people told" is the
channel's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from context_harness.primitives.oauth import OAuthTokens, TokenEvent, TokenState
from context_harness.upstream.contract import Counters

# The state shown for a credential or an IdP's sign-in whose values rest in the keychain, which has not given
# them (locked, gone): `last_error` says why.
SECRET_UNREADABLE = "secret_unreadable"


@dataclass(frozen=True, slots=True)
class Change:
    """What a listener hears."""

    name: str
    event: TokenEvent | None = None  # when it is one to tell people and scripts, with its message
    message: str = ""
    credential: bool = False  # a new credential was stored: its header goes into the configs
    # The person was told already (an identity provider's sign-in that its servers wait for): the event hook hears
    # the event, the notify command does not run again.
    quiet: bool = False


Listener = Callable[[Change], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Plan:
    """The refresher's next wake-up for a server (wall clock), and what it was computed from: a plan is
    only recomputed when its basis moved, so an unrelated change never re-draws the jitter."""

    due: float
    refresh: bool = True  # False: not a refresh, a look at a token that has no refresh token
    basis: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Plannable:
    """What a renewal is planned from: the tokens, and whether they can be renewed without a person (a refresh
    token, or a login without a person, which asks again)."""

    tokens: OAuthTokens
    renewable: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """The server refused the credential it was sent: what a bridged request or `chctl check` met."""

    status: int  # 401: the credential itself (after any renewal); 403: not enough for what was asked
    message: str


@dataclass(eq=False, slots=True)
class ServerState:
    name: str
    # The live phase (refreshing, retrying, needs_reauth); None: what the stored credential says.
    phase: TokenState | None = None
    last_error: str | None = None  # the last refresh's error, while it matters
    attempts: int = 0  # failed refresh attempts in a row: the backoff grows with it
    retry_after: float | None = None  # the server's Retry-After on the last failure, if it sent one
    reminded: bool = False  # a token without refresh token: the person was told it expires soon
    plan: Plan | None = None  # the refresher's next wake-up; None: nothing to do
    failed_login: str | None = None  # the last failed login, until one succeeds
    # The server's last refusal of the stored credential, until a request succeeds or a new one is stored.
    refusal: Refusal | None = None
    config_errors: dict[str, str] = field(default_factory=dict)  # configs whose last write failed, and why
    url_changed: set[str] = field(default_factory=set)  # of those, entries pointing away from the recorded URL
    # Scopes the server asked for when it refused a call (403 `insufficient_scope`) that the credential lacks:
    # the next `chctl auth` asks for them too (services/step_up.py). Until a login or a logout.
    scopes_wanted: tuple[str, ...] = ()
    # The live bridges carrying it, by bridge id: a relay puts its counters here when it opens and takes
    # them out when it closes; its upstream session counts into them.
    bridges: dict[int, Counters] = field(default_factory=dict)
    refreshed_at: float = -float("inf")  # when the last refresh began (monotonic)
    # Bumped whenever this daemon stores, refreshes or forgets the credential: work that started before
    # (a refresh that waited for the lock) compares it to see that someone else has done its job.
    version: int = 0
    # One refresh, login or logout at a time per server (with a lock file across processes).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def want_scopes(self, scopes: list[str]) -> bool:
        """The server refused a call for lack of `scopes`; True when that is news (a person is told once)."""
        wanted = tuple(dict.fromkeys([*self.scopes_wanted, *scopes]))
        news, self.scopes_wanted = wanted != self.scopes_wanted, wanted
        return news

    def logged_in_or_out(self) -> None:
        """A login asked for the scopes wanted (or a logout dropped them): none is wanted any more."""
        self.scopes_wanted = ()

    def settle(self) -> None:
        """A refresh worked or a new credential was stored: nothing live is left to report, neither a
        failed login nor the server's refusal of the credential it replaces."""
        self.phase, self.last_error, self.attempts, self.retry_after, self.reminded = None, None, 0, None, False
        self.failed_login, self.refusal = None, None

    def refused(self, status: int, message: str) -> bool:
        """The server refused the stored credential (a 401 that no renewal cured, a 403). `status` and `doctor`
        show it until a request succeeds or a new credential is stored. True when it is news."""
        refusal = Refusal(status, message)
        news, self.refusal = self.refusal != refusal, refusal
        return news

    def accepted(self) -> bool:
        """A request with the credential succeeded: a refusal is history. True when there was one."""
        news, self.refusal = self.refusal is not None, None
        return news


class ServerStates:
    """The registry: one `ServerState` per server name, made on first use."""

    def __init__(self) -> None:
        self._states: dict[str, ServerState] = {}
        self._listeners: list[Listener] = []

    def get(self, name: str) -> ServerState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = ServerState(name)
        return state

    def peek(self, name: str) -> ServerState | None:
        """The state if this daemon has one, without making it."""
        return self._states.get(name)

    def names(self) -> list[str]:
        return list(self._states)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def changed(
        self,
        name: str,
        event: TokenEvent | None = None,
        message: str = "",
        *,
        credential: bool = False,
        quiet: bool = False,
    ) -> None:
        """`name`'s credential or state changed (with `event` when it is one to tell people and scripts;
        `credential`: a new one was stored; `quiet`: see `Change`). Each listener is awaited in turn, in the order
        subscribed."""
        change = Change(name, event, message, credential, quiet)
        for listener in self._listeners:
            await listener(change)

    def stored(self, name: str) -> None:
        """This daemon stored or forgot `name`'s credential: the live state starts again."""
        state = self.get(name)
        state.settle()
        state.version += 1
