"""What the daemon knows about each server right now, in one record per server, and the one channel
that says a server changed.

The credential itself stays on disk (the token store is the truth, across processes and restarts); a
`ServerState` holds what is live: the refresh phase (`Idle | Refreshing | Retrying | NeedsLogin`, the failed
attempts the backoff grows with in `Retrying`), the refresher's next wake-up, the last failed login, the
configs whose last write failed and the counters of the live bridges carrying it. "Why does this server say
*needs login*?" is answered here (`effective_state`, `login_reason`), and so is "when is its next refresh?"
(`plan`, and the backoff it is computed from).

Its fields change only through its transitions (`stored`, `refreshing`, `failed`, `needs_login`, ...); each
returns the `Change` to announce, and `await ServerStates.announce(change)` is the one call for "this server's
credential or state changed" (`ServerStates.changed` for what changed outside the record: its configs). Its
listeners are wired once, in `build_services`, and awaited in that order: the publisher (it writes the header
into the configs when the credential is new), the refresher (it re-plans), the notifier and event hook (they
hear the event). So the order "refresh token on disk, then headers written, then people told" is the
channel's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, assert_never

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


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing under way: the stored credential says how the server is."""


@dataclass(frozen=True, slots=True)
class Retrying:
    """Failed attempts in a row, the next one planned with a backoff that grows with `attempt`."""

    attempt: int
    after: float | None  # the server's Retry-After on the last failure, if it sent one
    error: str | None  # the last failure the server gave; None: none of its own (its lock busy, a bug of ours)


@dataclass(frozen=True, slots=True)
class Refreshing:
    """A refresh is under way, since `since` (monotonic); `retry`: the backoff it is an attempt of."""

    since: float
    retry: Retrying | None = None


@dataclass(frozen=True, slots=True)
class NeedsLogin:
    """The server refused the refresh (or there is nothing to refresh with): only a person can log in again."""

    reason: str


Phase = Idle | Refreshing | Retrying | NeedsLogin
IDLE = Idle()


class Stored(Protocol):
    """What is stored of a server's credential (or an identity provider's sign-in) that the live state
    answers together with: its state and the error it was saved with."""

    @property
    def state(self) -> TokenState: ...

    @property
    def last_error(self) -> str | None: ...


class ServerState:
    """One server's live state. Its fields change only through the transitions below; each returns the change
    to announce (`ServerStates.announce`), or None when there is nothing to tell."""

    __slots__ = (
        "_bridges",
        "_config_errors",
        "_failed_login",
        "_url_changed",
        "_phase",
        "_plan",
        "_refreshed_at",
        "_refusal",
        "_reminded",
        "_scopes_wanted",
        "_lock",
        "_name",
        "_version",
    )

    def __init__(self, name: str) -> None:
        self._name = name
        self._phase: Phase = IDLE
        self._reminded = False  # a token without refresh token: the person was told it expires soon
        self._plan: Plan | None = None  # the refresher's next wake-up; None: nothing to do
        self._failed_login: str | None = None  # the last failed login, until one succeeds
        # The server's last refusal of the stored credential, until a request succeeds or a new one is stored.
        self._refusal: Refusal | None = None
        self._config_errors: dict[str, str] = {}  # configs whose last write failed, and why
        self._url_changed: set[str] = set()  # of those, entries pointing away from the recorded URL
        # Scopes the server asked for when it refused a call (403 `insufficient_scope`) that the credential
        # lacks: the next `chctl auth` asks for them too (services/step_up.py). Until a login or a logout.
        self._scopes_wanted: tuple[str, ...] = ()
        # The live bridges carrying it, by bridge id: a relay puts its counters here when it opens and takes
        # them out when it closes; its upstream session counts into them.
        self._bridges: dict[int, Counters] = {}
        self._refreshed_at = -float("inf")  # when the last refresh began (monotonic), whatever its outcome
        # Bumped whenever this daemon stores, refreshes or forgets the credential: work that started before
        # (a refresh that waited for the lock) compares it to see that someone else has done its job.
        self._version = 0
        self._lock = asyncio.Lock()

    # --- what readers see ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def lock(self) -> asyncio.Lock:
        """One refresh, login or logout at a time per server (with a lock file across processes)."""
        return self._lock

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def retry(self) -> Retrying | None:
        """The backoff in progress, also while its next attempt runs."""
        match self._phase:
            case Retrying():
                return self._phase
            case Refreshing(retry=retry):
                return retry
            case Idle() | NeedsLogin():
                return None
            case _:
                assert_never(self._phase)

    @property
    def attempts(self) -> int:
        """Failed refresh attempts in a row: the backoff grows with it."""
        return self.retry.attempt if self.retry is not None else 0

    @property
    def retry_after(self) -> float | None:
        """The server's Retry-After on the last failure, if it sent one."""
        return self.retry.after if self.retry is not None else None

    @property
    def error(self) -> str | None:
        """The last refresh's error, while it matters (a retry in progress, a login needed)."""
        if isinstance(self._phase, NeedsLogin):
            return self._phase.reason
        return self.retry.error if self.retry is not None else None

    @property
    def reminded(self) -> bool:
        return self._reminded

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def failed_login(self) -> str | None:
        return self._failed_login

    @property
    def refusal(self) -> Refusal | None:
        return self._refusal

    @property
    def config_errors(self) -> Mapping[str, str]:
        return self._config_errors

    @property
    def url_changed(self) -> AbstractSet[str]:
        return self._url_changed

    @property
    def scopes_wanted(self) -> tuple[str, ...]:
        return self._scopes_wanted

    @property
    def bridges(self) -> Mapping[int, Counters]:
        return self._bridges

    @property
    def refreshed_at(self) -> float:
        return self._refreshed_at

    @property
    def version(self) -> int:
        return self._version

    def effective_state(self, credential: Stored) -> TokenState:
        """What `status`, `token` and `check` show for `credential`: a login needed, said by the stored
        credential (it survives restarts) or by this daemon's last refresh, wins; else the refresh under way
        or the backoff; else what the stored credential says."""
        if credential.state is TokenState.NEEDS_REAUTH:
            return TokenState.NEEDS_REAUTH
        match self._phase:
            case Idle():
                return credential.state
            case Refreshing():
                return TokenState.REFRESHING
            case Retrying():
                return TokenState.RETRYING
            case NeedsLogin():
                return TokenState.NEEDS_REAUTH
            case _:
                assert_never(self._phase)

    def login_reason(self, credential: Stored) -> str | None:
        """Why `credential` needs a new login, when it does and someone said why."""
        if isinstance(self._phase, NeedsLogin):
            return self._phase.reason
        return credential.last_error if credential.state is TokenState.NEEDS_REAUTH else None

    # --- the refresh ---------------------------------------------------------------------------------

    @contextmanager
    def refreshing(self, now: float) -> Iterator[None]:
        """A refresh under way for the block's length. Its outcome (`stored`, `failed`, `needs_login`) ends
        the phase; a block left without one (an exception, a cancellation) goes back to the phase before."""
        before = self._phase
        self._phase = Refreshing(now, before if isinstance(before, Retrying) else None)
        self._refreshed_at = now
        try:
            yield
        finally:
            if isinstance(self._phase, Refreshing):
                self._phase = before

    def failed(self, error: str | None, retry_after: float | None = None, message: str = "") -> Change:
        """One more failed attempt in a row (`error`: the server's, None for one of our own, which keeps the
        last error shown): the refresher backs off from the count and `retry_after`. A login needed stays
        needed. `message`: what people are told, if anything."""
        if isinstance(self._phase, NeedsLogin):
            return Change(self.name)
        last = self.retry
        attempt = last.attempt + 1 if last is not None else 1
        self._phase = Retrying(attempt, retry_after, error or (last.error if last is not None else None))
        return Change(self.name, TokenEvent.RETRYING if message else None, message)

    def needs_login(self, reason: str, message: str, *, saved: bool, quiet: bool = False) -> Change:
        """The refresh was refused for good (`saved`: and the token file now says so; `quiet`: see `Change`)."""
        if saved:
            self._version += 1
        self._phase = NeedsLogin(reason)
        return Change(self.name, TokenEvent.NEEDS_REAUTH, message, quiet=quiet)

    def refreshed_elsewhere(self) -> Change:
        """Someone else refreshed it: the backoff of our own failures no longer applies."""
        if isinstance(self._phase, Retrying):
            self._phase = IDLE
        self._reminded = False
        return Change(self.name)

    def reminded_of_expiry(self, message: str = "") -> Change:
        """A token without refresh token was looked at before it expires (the person told, with `message`):
        the refresher looks again when it has expired."""
        self._reminded = True
        return Change(self.name, TokenEvent.EXPIRING if message else None, message)

    def stored(self, event: TokenEvent | None = None, message: str = "") -> Change:
        """This daemon stored (or forgot) the credential: nothing live is left to report, neither a retry, a
        failed login nor the server's refusal of the credential it replaces. Its header goes into the configs."""
        self._phase, self._reminded, self._failed_login, self._refusal = IDLE, False, None, None
        self._version += 1
        return Change(self.name, event, message, credential=True)

    def logged_in(self, message: str) -> Change:
        """A login stored its credential; it asked for the scopes wanted, so none is wanted any more."""
        self._scopes_wanted = ()
        return self.stored(TokenEvent.NEW, message)

    def logged_out(self, message: str) -> Change:
        """A logout forgot the credential (and with it the scopes wanted)."""
        self.stored()
        self._scopes_wanted = ()
        return Change(self.name, TokenEvent.REVOKED, message)

    # --- planning, logins, the server's answers, configs, bridges ------------------------------------------

    def planned(self, plan: Plan | None) -> None:
        """The refresher's next wake-up (None: nothing to do)."""
        self._plan = plan

    def login_ended(self, failure: str | None) -> None:
        """A login ended: `failure` (what `status` shows as LAST ERROR until one succeeds) or None."""
        self._failed_login = failure

    def want_scopes(self, scopes: list[str], message: str) -> Change | None:
        """The server refused a call for lack of `scopes`: a change to tell (`message`) when that is news."""
        wanted = tuple(dict.fromkeys([*self._scopes_wanted, *scopes]))
        news, self._scopes_wanted = wanted != self._scopes_wanted, wanted
        return Change(self.name, TokenEvent.SCOPE_NEEDED, message) if news else None

    def refused(self, status: int, message: str) -> Change | None:
        """The server refused the stored credential (a 401 that no renewal cured, a 403). `status` and `doctor`
        show it until a request succeeds or a new credential is stored. A change when it is news."""
        refusal = Refusal(status, message)
        news, self._refusal = self._refusal != refusal, refusal
        return Change(self.name) if news else None

    def accepted(self) -> Change | None:
        """A request with the credential succeeded: a refusal is history. A change when there was one."""
        news, self._refusal = self._refusal is not None, None
        return Change(self.name) if news else None

    def entry_url_changed(self, path: str, message: str, *, news: bool) -> Change | None:
        """`path`'s entry points away from the recorded URL: its header was taken out (`news`: tell people)."""
        self._url_changed.add(path)
        return Change(self.name, TokenEvent.URL_CHANGED, message) if news else None

    def configs_written(self, failed: Mapping[str, str]) -> None:
        """A publish ended: the configs it could not write (`failed`), and why, replace the last ones. An entry
        pointed back (by hand) is no longer reported; the next change is news again."""
        self._config_errors = dict(failed)
        self._url_changed &= set(failed)

    def config_cleared(self, path: str | None = None) -> None:
        """`chctl add`, `remove` or a logout dealt with `path` (None: every config): what went wrong is history."""
        if path is None:
            self._config_errors, self._url_changed = {}, set()
        else:
            self._config_errors.pop(path, None)
            self._url_changed.discard(path)

    def bridge_opened(self, bridge_id: int) -> Counters:
        """A live bridge: its counters, which `chctl status` reads here until `bridge_closed`."""
        counters = self._bridges[bridge_id] = Counters()
        return counters

    def bridge_closed(self, bridge_id: int) -> None:
        self._bridges.pop(bridge_id, None)


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
        """Something about `name` outside its record changed (its configs, the sign-in it waits for; `quiet`: see
        `Change`): the listeners look again."""
        await self.announce(Change(name, event, message, credential, quiet))

    async def announce(self, change: Change | None) -> None:
        """A change a record's transition decided (None: nothing to tell). Each listener is awaited in turn,
        in the order subscribed."""
        if change is None:
            return
        for listener in self._listeners:
            await listener(change)
