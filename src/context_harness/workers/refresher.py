"""Refresh every OAuth token well before it expires; back off on transient failures; stop and tell a
person when only a new login helps.

One APScheduler job per server. Its time is computed from the server's `ServerState` (failed attempts,
reminder given) and stored token, and recomputed whenever the change channel says the server changed.
APScheduler's timers run on the monotonic clock, which stops while a laptop sleeps; a periodic wall-clock
check (every `wallclock_check_s`) runs any job whose wall-clock time has passed, so a suspend never makes
us late by more than one check interval after wake.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from context_harness.primitives.oauth import (
    DEFAULT_TOKEN_LIFETIME_S,
    MAX_TOKEN_LIFETIME_S,
    LoginKind,
    OAuthTokens,
    TokenState,
)
from context_harness.services.oauth_service import OAuthService
from context_harness.services.server_state import Change, Plan, Plannable, ServerState, ServerStates
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

# Never schedule closer to expiry than this: the refresh request itself needs a moment.
EXPIRY_SAFETY_MARGIN_S = 2.0
# A token without a refresh token: the person is reminded this long before it expires (sooner for a short
# token: at the usual refresh time), and it is looked at again just after it expired, to flag needs_reauth.
NO_REFRESH_REMINDER_S = 300.0
EXPIRY_CHECK_DELAY_S = 1.0
WALLCLOCK_JOB_ID = "__wallclock_check__"


def refresh_time(
    tokens: OAuthTokens,
    fraction: float,
    jitter: float,
    rng: random.Random,
    now: float,
    min_spacing_s: float = 0.0,
) -> float:
    """When to refresh: at `fraction` of the token's lifetime, ± `jitter` of it; a token without
    `expires_in` counts as a 1-hour token. Never sooner than `min_spacing_s` after it was issued, and the
    lifetime counts as at most a year (a token file written before lifetimes were clamped)."""
    issued = tokens.issued_at or now
    expires = tokens.expires_at if tokens.expires_at is not None else issued + DEFAULT_TOKEN_LIFETIME_S
    lifetime = min(max(expires - issued, 0.0), MAX_TOKEN_LIFETIME_S)
    expires = issued + lifetime
    planned = issued + lifetime * fraction + lifetime * jitter * rng.uniform(-1.0, 1.0)
    planned = min(planned, expires - min(EXPIRY_SAFETY_MARGIN_S, lifetime * (1 - fraction)))
    return max(planned, issued + min_spacing_s)


def reminder_time(tokens: OAuthTokens, fraction: float, now: float) -> float:
    """When to remind a person that a token without refresh token expires: a few minutes before."""
    issued = tokens.issued_at or now
    expires = tokens.expires_at if tokens.expires_at is not None else issued + DEFAULT_TOKEN_LIFETIME_S
    return max(issued + (expires - issued) * fraction, expires - NO_REFRESH_REMINDER_S)


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS's formula), never below a tenth of the base."""
    ceiling = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    return max(rng.uniform(0, ceiling), base_s / 10)


@dataclass(frozen=True, slots=True)
class RefreshSettings:
    """When to refresh, how many at once, how to back off (`Settings.refreshing()`, which holds the defaults)."""

    refresh_fraction: float  # of the lifetime: refresh when this much of it has passed
    refresh_jitter: float  # ± this much of the lifetime, so tokens issued together spread out
    max_concurrent_refreshes: int
    # The scheduler's sleeps are capped so a laptop that slept past a refresh time catches up on wake.
    wallclock_check_s: float
    min_refresh_spacing_s: float  # however short a server makes its tokens
    backoff_base_s: float  # transient failures: exponential backoff with full jitter from here...
    backoff_max_s: float  # ...up to here

    @property
    def timing(self) -> tuple[float, float, float]:
        """What a planned refresh time depends on."""
        return (self.refresh_fraction, self.refresh_jitter, self.min_refresh_spacing_s)


class Renewals(Protocol):
    """What one refresher keeps fresh: the servers' credentials, or the identity providers' sign-ins."""

    states: ServerStates
    label: str  # the log field naming one of them: `server`, `idp`

    def names(self) -> list[str]: ...

    def plannable(self, name: str) -> Plannable | str | None:
        """What to plan from; None: nothing (no login); a string: nothing, and why, worth a log line."""
        ...

    async def refresh_once(self, name: str, *, force: bool, due_before: float | None = None) -> object: ...

    async def repair(self) -> None:
        """At start and at every wall-clock check: mend what a crash or a failed write left behind."""
        ...


class ServerRenewals:
    """The servers' credentials (OAuthService), planned while a config carries them."""

    label = "server"

    def __init__(self, oauth: OAuthService, tokens: TokenStore, bindings: BindingStore) -> None:
        self.oauth, self.tokens, self.bindings = oauth, tokens, bindings
        self.states = oauth.states

    def names(self) -> list[str]:
        return self.tokens.names()

    def plannable(self, name: str) -> Plannable | str | None:
        credential = self.tokens.load(name)
        if credential is None or credential.kind != "oauth" or credential.state is TokenState.NEEDS_REAUTH:
            return None
        if not self.bindings.for_server(name):
            # No config carries it (removed): keep the credential, stop refreshing; `chctl add` resumes it.
            return "no config carries the server"
        machine = credential.login is not LoginKind.BROWSER
        if credential.tokens is None:  # a login without a person whose first token failed for now: retried
            pending = machine and self.states.get(name).attempts > 0
            return Plannable(OAuthTokens(access_token=""), True) if pending else None
        return Plannable(credential.tokens, machine or credential.tokens.refresh_token is not None)

    async def refresh_once(self, name: str, *, force: bool, due_before: float | None = None) -> object:
        return await self.oauth.refresh_once(name, force=force, due_before=due_before)

    async def repair(self) -> None:
        await self.oauth.repair_configs()  # a crash or a failed write left a config behind the stored token


class Refresher:
    def __init__(
        self,
        settings: RefreshSettings,
        renewals: Renewals,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.renewals = renewals
        self.states = renewals.states
        self.clock = clock
        self.rng = rng or random.Random()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(settings.max_concurrent_refreshes)
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self._check_wall_clock,
            "interval",
            seconds=self.settings.wallclock_check_s,
            id=WALLCLOCK_JOB_ID,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC),  # at start too: configs are repaired before anything else
        )
        for name in self.renewals.names():
            self.schedule(name)
        log.info("refresher_started", kind=self.renewals.label, planned=len(self._planned()))

    def configure(self, settings: RefreshSettings) -> None:
        """New settings (a reload): the concurrency limit, the wall-clock check and the plans follow them.
        Refreshes in flight keep the limit they started under."""
        previous, self.settings = self.settings, settings
        if settings.max_concurrent_refreshes != previous.max_concurrent_refreshes:
            self._limit = asyncio.Semaphore(settings.max_concurrent_refreshes)
        if not self.scheduler.running:
            return
        if settings.wallclock_check_s != previous.wallclock_check_s:
            self.scheduler.reschedule_job(WALLCLOCK_JOB_ID, trigger="interval", seconds=settings.wallclock_check_s)
        if settings.timing != previous.timing:
            for name in self._planned():
                self.replan(name)  # the timing is in a plan's basis; a backoff in progress keeps its time

    async def stop(self, grace_s: float = 20.0) -> None:
        """Stop scheduling; let refreshes in flight finish their writes (bounded by `grace_s`).

        A refresh is never cancelled: cancelling after the server rotated the refresh token but before we
        saved the new one would burn the grant.
        """
        self._stopping = True
        self.scheduler.shutdown(wait=False)
        running = [t for t in self._running.values() if not t.done()]
        if running:
            log.info("refresher_finishing_in_flight", count=len(running))
            await asyncio.wait(running, timeout=grace_s)

    # --- planning: the next wake-up is computed from the server's state ----------------------------

    def next_refresh_at(self, name: str) -> float | None:
        state = self.states.peek(name)
        plan = state.plan if state is not None else None
        return plan.due if plan is not None and plan.refresh else None

    async def on_change(self, change: Change) -> None:
        """The change channel's listener: whatever changed, the plan follows the state."""
        if self.scheduler.running:
            self.replan(change.name)

    def schedule(self, name: str) -> None:
        """Plan `name` afresh from its stored token and state (at start, and when told to)."""
        self.replan(name, force=True)

    def replan(self, name: str, *, force: bool = False) -> None:
        """Recompute `name`'s next wake-up; unless `force`, a plan whose basis did not move is kept."""
        state = self.states.get(name)
        found = self.renewals.plannable(name)
        if not isinstance(found, Plannable):
            if found is not None and state.plan is not None:
                log.info("refresh_paused", reason=found, **{self.renewals.label: name})
            self._unplan(state)
            return
        tokens, renewable = found.tokens, found.renewable
        if state.attempts:  # failed attempts in a row: back off (at least as long as the server asked)
            basis: tuple[object, ...] = ("retry", state.attempts, state.retry_after)
        else:
            token = hash((tokens.access_token, tokens.issued_at, tokens.expires_at, renewable))
            basis = ("token", token, state.reminded, self.settings.timing)
        if not force and state.plan is not None and state.plan.basis == basis:
            return
        now = self.clock()
        if state.attempts:
            delay = backoff_delay(state.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s, self.rng)
            delay = max(delay, state.retry_after or 0.0)
            self._plan(state, Plan(now + delay, True, basis))
            log.info("refresh_retry_planned", attempt=state.attempts, delay_s=round(delay, 2), **self._who(name))
        elif not renewable and not state.reminded:
            self._plan(state, Plan(reminder_time(tokens, self.settings.refresh_fraction, now), False, basis))
        elif not renewable:  # reminded: look again just after it expired, to flag needs_reauth
            if tokens.expires_at is None:  # never expires as far as we know: nothing to look at
                self._unplan(state)
            else:
                self._plan(state, Plan(max(tokens.expires_at, now) + EXPIRY_CHECK_DELAY_S, False, basis))
        else:
            fraction, jitter, spacing = self.settings.timing
            self._plan(state, Plan(refresh_time(tokens, fraction, jitter, self.rng, now, spacing), True, basis))

    def _who(self, name: str) -> dict[str, str]:
        return {self.renewals.label: name}

    def _planned(self) -> list[str]:
        return [n for n in self.states.names() if self.states.get(n).plan is not None]

    def _plan(self, state: ServerState, plan: Plan) -> None:
        if self._stopping:
            return
        state.planned(plan)
        # The scheduler's own clock is real time; translate our (maybe injected) clock's due time into it.
        # Capped: a far-off date is re-planned by the wall-clock check long before it matters.
        delay = min(max(plan.due - self.clock(), 0.0), MAX_TOKEN_LIFETIME_S)
        try:
            run_date = datetime.fromtimestamp(time.time() + delay, UTC)
            self.scheduler.add_job(
                self._fire,
                "date",
                run_date=run_date,
                args=[state.name],
                id=state.name,
                replace_existing=True,
                misfire_grace_time=None,
                coalesce=True,
                max_instances=1,
            )
        except Exception:  # one server's bad numbers must never stop the daemon or the other servers
            log.exception("refresh_schedule_failed", **self._who(state.name))

    def _unplan(self, state: ServerState) -> None:
        state.planned(None)
        try:
            self.scheduler.remove_job(state.name)
        except JobLookupError:
            pass

    # --- running -------------------------------------------------------------------------------------

    async def _check_wall_clock(self) -> None:
        await self.renewals.repair()
        now = self.clock()
        for name in self._planned():
            plan = self.states.get(name).plan
            if plan is None:
                continue
            if not isinstance(self.renewals.plannable(name), Plannable):  # e.g. its last binding went
                self.replan(name)
                continue
            if plan.due <= now and name not in self._running:
                log.info("refresh_caught_up", late_s=round(now - plan.due, 1), **self._who(name))
                self.trigger(name)

    async def _fire(self, name: str) -> None:
        # The scheduler's job only starts our own task: APScheduler cancels the jobs it runs when it shuts
        # down, and a refresh must never be cancelled halfway.
        self.trigger(name)

    def trigger(self, name: str) -> asyncio.Task[None] | None:
        """Run `name`'s refresh now, unless one is already running (then that one)."""
        if name in self._running:
            return self._running[name]
        if self._stopping:
            return None
        task = asyncio.get_running_loop().create_task(self._run(name))
        self._running[name] = task
        task.add_done_callback(lambda _t: self._running.pop(name, None))
        return task

    async def _run(self, name: str) -> None:
        state = self.states.get(name)
        plan = state.plan
        try:
            async with self._limit:
                await self.renewals.refresh_once(name, force=False, due_before=plan.due + 1 if plan else None)
        except Exception:
            # A bug of ours: back off like a transient failure instead of hammering the server every few seconds.
            # The refresh left its phase as it was; the failure counts for the backoff, and the plan follows.
            await self.states.announce(state.failed(None))
            self.replan(name)
            delay = state.plan.due - self.clock() if state.plan is not None else None
            delay_s = delay and round(delay, 2)
            log.exception("refresh_job_crashed", attempt=state.attempts, delay_s=delay_s, **self._who(name))
            return
        # The outcome went through the change channel; a run that changed nothing must not keep its past plan.
        self.replan(name, force=state.plan is plan)
