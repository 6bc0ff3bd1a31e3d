"""Logins in progress: `auth.start` begins one and returns the URL, `auth.wait` waits for its end.

The flow runs in the daemon (it owns the tokens); `chctl` only shows the URL, opens the browser,
forwards a pasted redirect URL, and waits. A flow nobody waits for (the `chctl` that started it was
killed) is cancelled after a grace period, so it does not hold its callback port until its timeout; a
result nobody collects is dropped after the same period.

A start that `join`s (one from another machine) does not begin a second login for a server whose login is
running: it gets that login's id and URL, so a burst of them makes one login, one callback listener and at
most one client registration.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.auth_guidance import login_failure_hint, no_login_needed
from context_harness.services.oauth_service import AuthOptions, OAuthService
from context_harness.services.server_state import ServerStates

log = structlog.get_logger(__name__)

# `chctl auth` calls auth.wait right after auth.start, and again at once if its connection drops: a flow
# with no waiter for this long was abandoned.
ABANDONED_AFTER_S = 30.0


# One login in the browser: given the handler that shows its URL and the queue of pasted redirect URLs, it ends
# with the stored result (a server's credential, an identity provider's sign-in).
Login = Callable[[Callable[[str], None], asyncio.Queue[str]], Coroutine[Any, Any, Result[Any]]]


@dataclass
class _Flow:
    name: str
    task: asyncio.Task[Result[Any]]
    paste: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    waiters: int = 0
    expiry: asyncio.TimerHandle | None = None


class AuthFlows:
    def __init__(self, oauth: OAuthService, abandoned_after_s: float = ABANDONED_AFTER_S) -> None:
        self.oauth = oauth
        self.abandoned_after_s = abandoned_after_s
        self._flows: dict[str, _Flow] = {}
        self._latest: dict[str, asyncio.Task[Result[dict[str, str]]]] = {}  # per server: the last start

    def _record(self, states: ServerStates, name: str, task: asyncio.Task[Result[Any]]) -> None:
        """The last failed login, until one succeeds, goes into the server's (or IdP's) state: `chctl status`
        shows it as LAST ERROR."""
        if task.cancelled():
            return
        state = states.get(name)
        if task.exception() is not None:  # a bug; the flow's waiter reports it
            state.login_ended("login failed: internal error (see `chctl logs`)")
            return
        result = task.result()
        state.login_ended(f"login failed: {result.error}" if isinstance(result, Failure) else None)

    def _expire_later(self, flow_id: str) -> None:
        flow = self._flows.get(flow_id)
        if flow is None:
            return
        if flow.expiry is not None:
            flow.expiry.cancel()
        flow.expiry = asyncio.get_running_loop().call_later(self.abandoned_after_s, self._expire, flow_id)

    def _expire(self, flow_id: str) -> None:
        flow = self._flows.get(flow_id)
        if flow is None or flow.waiters:
            return
        del self._flows[flow_id]
        if not flow.task.done():
            flow.task.cancel()  # closes its callback listener
        log.info("authorization_flow_abandoned", server=flow.name, finished=flow.task.done())

    async def start(self, name: str, options: AuthOptions, *, join: bool = False) -> Result[dict[str, str]]:
        """Begin a login and return its id and URL, unless `name` needs none; with `join`, the login already
        running for `name`, if any."""
        oauth = self.oauth
        config_url = await oauth.server_url_off_loop(name)
        known_url = config_url.value if isinstance(config_url, Success) else None
        refused = no_login_needed(name, oauth.tokens.load(name), oauth.mcp.known(name), known_url)
        if refused is not None:
            return refused
        latest = self._latest.get(name)
        if not (join and latest is not None and self._running(latest)):

            async def login(show: Callable[[str], None], paste: asyncio.Queue[str]) -> Result[Any]:
                return await self.oauth.authenticate(name, options, show, paste)

            latest = self._latest[name] = asyncio.create_task(self._start(name, login, self.oauth.states))
        # Shielded: a caller that hangs up leaves the login registered (it is abandoned in time), not orphaned.
        return await asyncio.shield(latest)

    async def start_sign_in(self, idp: str, login: Login, states: ServerStates) -> Result[dict[str, str]]:
        """Begin an identity provider's sign-in (`chctl idp login`); `auth.wait` waits for it like any login."""
        task = self._latest[f"idp:{idp}"] = asyncio.create_task(self._start(idp, login, states))
        return await asyncio.shield(task)

    def _running(self, start: asyncio.Task[Result[dict[str, str]]]) -> bool:
        """Whether this start is still under way, or gave a login that is still running."""
        if not start.done():
            return True
        if start.cancelled() or start.exception() is not None or isinstance(start.result(), Failure):
            return False
        result = start.result()
        assert isinstance(result, Success)
        flow = self._flows.get(result.value["flow_id"])
        return flow is not None and not flow.task.done()

    async def _start(self, name: str, login: Login, states: ServerStates) -> Result[dict[str, str]]:
        url_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def show(url: str) -> None:
            if not url_ready.done():
                url_ready.set_result(url)

        paste: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.create_task(login(show, paste))
        task.add_done_callback(lambda done: self._record(states, name, done))
        waiting: set[asyncio.Future[Any]] = {task, url_ready}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the daemon is stopping
            task.cancel()
            raise
        if not url_ready.done():  # the flow ended before there was anything to open: discovery failed, ...
            result = task.result()
            failure = result if isinstance(result, Failure) else Failure("login ended early", ErrorCode.INTERNAL)
            return login_failure_hint(name, failure)
        flow_id = secrets.token_urlsafe(12)
        self._flows[flow_id] = _Flow(name, task, paste)
        self._expire_later(flow_id)
        task.add_done_callback(lambda _t: self._expire_later(flow_id))  # a result nobody collects goes too
        return Success({"flow_id": flow_id, "authorization_url": url_ready.result()})

    async def wait(self, flow_id: str) -> Result[Any]:
        flow = self._flows.get(flow_id)
        if flow is None:
            return Failure("no such login in progress", ErrorCode.NOT_FOUND, "start one with `chctl auth NAME`")
        flow.waiters += 1
        try:
            result = await asyncio.shield(flow.task)
        except asyncio.CancelledError:
            if flow.task.cancelled():
                self._flows.pop(flow_id, None)
                return Failure("the login was cancelled", ErrorCode.TIMEOUT, "run `chctl auth` again")
            raise  # our caller went away; the flow goes on until it ends, times out or is abandoned
        finally:
            flow.waiters -= 1
            if not flow.waiters:
                self._expire_later(flow_id)
        self._flows.pop(flow_id, None)
        return login_failure_hint(flow.name, result) if isinstance(result, Failure) else result

    def paste(self, flow_id: str, redirect_url: str) -> Result[bool]:
        flow = self._flows.get(flow_id)
        if flow is None:
            return Failure("no such login in progress", ErrorCode.NOT_FOUND)
        flow.paste.put_nowait(redirect_url)
        return Success(True)

    def cancel(self, flow_id: str) -> Result[bool]:
        flow = self._flows.pop(flow_id, None)
        if flow is None:
            return Success(False)
        flow.task.cancel()
        log.info("authorization_flow_cancelled", server=flow.name)
        return Success(True)

    async def cancel_all(self) -> None:
        tasks = [f.task for f in self._flows.values()] + [t for t in self._latest.values() if not t.done()]
        self._flows.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
