"""The refresher against our own fault-injecting token endpoints: outcomes, backoff, Retry-After,
needs_reauth with one notification, no retry storm, caught-up clock jumps, header publishing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from context_harness.config.jsonc import parse_jsonc
from context_harness.daemon.services import Services, build_services
from context_harness.daemon.settings import Settings
from context_harness.primitives.oauth import ClientRegistration, Credential, OAuthTokens, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Success
from context_harness.services.config_service import ConfigTarget
from context_harness.services.oauth_service import AuthOptions, OAuthService, RefreshNotNeeded
from context_harness.stores.bindings import Binding
from context_harness.stores.client_store import ClientStore
from context_harness.stores.lock_file import file_lock
from context_harness.stores.token_store import TokenStore
from context_harness.workers.auth_flows import AuthFlows
from context_harness.workers.refresher import WALLCLOCK_JOB_ID, Refresher, backoff_delay, refresh_time
from tests.oauth_fakes import (
    FakeWorld,
    ScriptedTokenEndpoint,
    half_response_server,
    hang,
    query_of,
    respond,
    running_world,
    serve,
)

OLD_ACCESS = "old-access-token-value-0001"
OLD_REFRESH = "old-refresh-token-value-0001"


def issued(n: int) -> dict[str, Any]:
    return {
        "access_token": f"new-access-{n}",
        "refresh_token": f"new-refresh-{n}",
        "token_type": "Bearer",
        "expires_in": 3600,
    }


async def eventually(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Harness:
    settings: Settings
    tokens: TokenStore
    oauth: OAuthService
    refresher: Refresher
    config_path: Path
    services: Services

    def credential(self) -> Credential:
        found = self.tokens.load("srv")
        assert found is not None
        return found

    def header(self) -> str:
        return str(parse_jsonc(self.config_path.read_text())["mcp"]["srv"]["headers"]["Authorization"])

    def state(self) -> TokenState:
        return self.oauth.state_of(self.credential())


@pytest.fixture
def notify_log(tmp_path: Path) -> Path:
    return tmp_path / "notify.log"


@pytest.fixture
async def make_harness(tmp_path: Path, notify_log: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Services] = []

    async def factory(
        token_endpoint: str,
        *,
        issued_ago: float = 100,
        expires_in: float = 30,
        clock: Callable[[], float] = time.time,
        refresh_token: str | None = OLD_REFRESH,
        **overrides: Any,
    ) -> Harness:
        recorder = [
            sys.executable,
            "-c",
            "import json,os,sys; open(sys.argv[1],'a').write(json.dumps({k: os.environ.get(k) for k in "
            "('CH_SERVER','CH_STATE','CH_MESSAGE')})+'\\n')",
            str(notify_log),
        ]
        knobs: dict[str, Any] = {
            "backoff_base_s": 0.2,
            "backoff_max_s": 1.0,
            "wallclock_check_s": 0.1,
            "http_timeout_s": 0.5,
            **overrides,
        }
        events = [*recorder[:-1], str(notify_log) + ".events"]
        settings = Settings(home=tmp_path / "ch", notify_command=recorder, event_command=events, **knobs)
        services = build_services(settings, clock=clock, rng=random.Random(7))
        tokens, bindings = services.tokens, services.bindings
        config_path = tmp_path / "opencode.json"
        config_path.write_text(
            '{\n  // ours\n  "mcp": {"srv": {"type": "remote", "url": "http://127.0.0.1:9/mcp"}}\n}\n'
        )
        bindings.bind("srv", Binding(path=str(config_path)))
        now = clock()
        tokens.save(
            Credential(
                name="srv",
                kind="oauth",
                state=TokenState.ACTIVE,
                token_endpoint=token_endpoint,
                client_id="client-1",
                resource="http://127.0.0.1:9/mcp",
                issuer="http://127.0.0.1:9",
                tokens=OAuthTokens(
                    access_token=OLD_ACCESS,
                    refresh_token=refresh_token,
                    issued_at=now - issued_ago,
                    expires_at=now - issued_ago + issued_ago + expires_in,
                ),
            )
        )
        made.append(services)
        services.refresher.start()
        return Harness(settings, tokens, services.oauth, services.refresher, config_path, services)

    yield factory
    for services in made:
        await services.refresher.stop()
        await services.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def start(*script: Any) -> tuple[str, ScriptedTokenEndpoint]:
        scripted = ScriptedTokenEndpoint(list(script))
        cm = serve(scripted.app())
        base = await cm.__aenter__()
        stack.append((cm, scripted))
        return f"{base}/token", scripted

    yield start
    for cm, scripted in stack:
        scripted.release.set()
        await cm.__aexit__(None, None, None)


def notifications(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- pure planning ------------------------------------------------------------------------------------


def test_refresh_is_planned_at_three_quarters_of_the_lifetime_with_a_few_percent_jitter() -> None:
    rng = random.Random(1)
    tokens = OAuthTokens(access_token="a", issued_at=1000.0, expires_at=1000.0 + 3600)
    times = [refresh_time(tokens, 0.75, 0.05, rng, now=1000.0) - 1000.0 for _ in range(500)]
    assert all(2700 - 180 <= t <= 2700 + 180 for t in times)
    assert max(times) - min(times) > 200  # really jittered, not one instant for every token


def test_a_one_second_token_is_refreshed_no_sooner_than_the_minimum_spacing() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=1000.0, expires_at=1001.0)
    assert refresh_time(tokens, 0.75, 0.05, random.Random(1), now=1000.0, min_spacing_s=10.0) == 1010.0


def test_an_absurd_expiry_counts_as_a_one_year_lifetime() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=1000.0, expires_at=1e300)
    due = refresh_time(tokens, 0.75, 0.0, random.Random(1), now=1000.0)
    assert due == 1000.0 + 0.75 * 365 * 24 * 3600


def test_a_token_without_expiry_is_treated_as_a_one_hour_token() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=500.0, expires_at=None)
    assert refresh_time(tokens, 0.75, 0.0, random.Random(1), now=500.0) == 500.0 + 2700


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (7, 300), (20, 300)]:
        delays = [backoff_delay(attempt, 5.0, 300.0, rng) for _ in range(300)]
        assert all(0.5 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8


# --- outcomes against a scripted token endpoint -----------------------------------------------------


# --- reload ----------------------------------------------------------------------------------------------


async def test_a_reload_rebuilds_the_concurrency_limit_the_wall_clock_check_and_the_plans(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    """SIGHUP hands new settings to `Services.configure`: each part takes the ones it uses."""
    url, _ = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600, wallclock_check_s=3600)
    services = h.services
    before = h.refresher.next_refresh_at("srv")
    assert before is not None and before > time.time() + 2000  # three quarters of an hour away
    fresh = h.settings.model_copy(
        update={"max_concurrent_refreshes": 3, "wallclock_check_s": 7.0, "refresh_fraction": 0.5, "http_timeout_s": 9.0}
    )
    services.configure(fresh)
    assert h.refresher._limit._value == 3  # a new limit, not the old semaphore's 16
    job = h.refresher.scheduler.get_job(WALLCLOCK_JOB_ID)
    assert job is not None and job.trigger.interval.total_seconds() == 7.0
    after = h.refresher.next_refresh_at("srv")
    assert after is not None and after < before - 600  # re-planned at half the lifetime
    assert services.oauth.settings.http_timeout_s == 9.0 and services.settings is fresh


async def test_503_then_200_keeps_the_old_token_while_retrying_then_publishes_the_new_one(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(503), respond(200, issued(1)))
    h = await make_harness(url, backoff_base_s=2.0, backoff_max_s=2.0)  # the retry waits at least 0.2 s
    await eventually(lambda: h.state() is TokenState.RETRYING, what="retrying")
    assert len(scripted.forms) == 1
    assert h.credential().tokens.access_token == OLD_ACCESS  # old token kept while valid
    assert OLD_ACCESS in h.config_path.read_text() and "new-access" not in h.config_path.read_text()
    # Saved first, then published: wait for both.
    await eventually(lambda: h.header() == "Bearer new-access-1", what="refreshed and published")
    assert h.state() is TokenState.ACTIVE
    assert h.credential().tokens.refresh_token == "new-refresh-1"
    assert len(scripted.forms) == 2
    assert all(f["refresh_token"] == OLD_REFRESH and f["grant_type"] == "refresh_token" for f in scripted.forms)
    assert scripted.forms[0]["resource"] == "http://127.0.0.1:9/mcp"
    assert "// ours" in h.config_path.read_text()


async def test_retry_after_is_honoured(make_harness: Callable[..., Any], endpoint: Callable[..., Any]) -> None:
    seen: list[float] = []

    async def stamp(request: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return web.json_response({}, status=503, headers={"Retry-After": "2"})
        return web.json_response(issued(1))

    url, _ = await endpoint(stamp)
    h = await make_harness(url)
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", timeout_s=10, what="refreshed")
    assert seen[1] - seen[0] >= 1.95  # backoff alone would have retried within 0.2 s


async def test_429_is_transient(make_harness: Callable[..., Any], endpoint: Callable[..., Any]) -> None:
    url, scripted = await endpoint(respond(429), respond(200, issued(1)))
    h = await make_harness(url)
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed")
    assert len(scripted.forms) == 2 and h.state() is TokenState.ACTIVE


async def test_a_timeout_is_transient(make_harness: Callable[..., Any], endpoint: Callable[..., Any]) -> None:
    holder: list[ScriptedTokenEndpoint] = []

    async def slow_then_fine(request: web.Request) -> web.StreamResponse:
        if len(holder[0].forms) == 1:
            return await hang(holder[0], 3.0)(request)
        return web.json_response(issued(1))

    url, scripted = await endpoint(slow_then_fine)
    holder.append(scripted)
    h = await make_harness(url)
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed after timeout")
    assert len(scripted.forms) == 2


async def test_a_refresh_answered_after_its_deadline_is_taken_and_its_refresh_token_is_never_sent_twice(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    holder: list[ScriptedTokenEndpoint] = []

    async def hung_then_answers(request: web.Request) -> web.StreamResponse:
        await holder[0].release.wait()  # a server that hangs, then handles what it was sent: the token rotates
        return web.json_response(issued(1))

    # What a server with reuse detection answers the same refresh token sent again: the grant is revoked.
    replayed = respond(400, {"error": "invalid_grant", "error_description": "refresh token reused, grant revoked"})
    url, scripted = await endpoint(hung_then_answers, replayed)
    holder.append(scripted)
    h = await make_harness(url)  # due now; a 0.5 s deadline, backoff from 0.2 s
    state = h.oauth.states.get("srv")
    await eventually(lambda: state.attempts >= 3, what="several attempts while the server hangs")
    assert len(scripted.forms) == 1  # the refresh token was sent once
    assert h.state() is TokenState.RETRYING and "its answer is still awaited" in (state.error or "")
    scripted.release.set()  # the server answers the request it kept
    await eventually(lambda: h.credential().tokens.refresh_token == "new-refresh-1", what="the late answer stored")
    assert h.credential().tokens.access_token == "new-access-1" and h.state() is TokenState.ACTIVE
    assert len(scripted.forms) == 1


async def test_connection_closed_mid_response_is_transient_and_the_token_file_stays_whole(
    make_harness: Callable[..., Any],
) -> None:
    async with half_response_server() as (base, count):
        h = await make_harness(f"{base}/token")
        # Checked together: right after a request is counted, its refresh is still in flight (REFRESHING).
        await eventually(
            lambda: count[0] >= 3 and h.state() is TokenState.RETRYING, what="retrying after broken responses"
        )
        assert h.credential().tokens.access_token == OLD_ACCESS
        assert h.credential().tokens.refresh_token == OLD_REFRESH


async def test_invalid_grant_needs_reauth_notifies_once_and_stops(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path
) -> None:
    url, scripted = await endpoint(respond(400, {"error": "invalid_grant", "error_description": "grant revoked"}))
    h = await make_harness(url)
    await eventually(lambda: h.state() is TokenState.NEEDS_REAUTH, what="needs_reauth")
    await eventually(lambda: notifications(notify_log), what="notify command")
    await asyncio.sleep(1.0)  # ten wall-clock checks and several backoff periods: nothing more may happen
    assert len(scripted.forms) == 1  # no retry storm
    assert h.refresher.next_refresh_at("srv") is None
    assert h.credential().state is TokenState.NEEDS_REAUTH  # on disk too: a restart does not retry either
    [note] = notifications(notify_log)
    assert note["CH_SERVER"] == "srv" and note["CH_STATE"] == "needs_reauth"
    assert "chctl auth srv" in note["CH_MESSAGE"]
    assert OLD_REFRESH not in json.dumps(note)


async def test_an_expired_token_without_refresh_token_needs_reauth(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=10, expires_in=-1, refresh_token=None)
    await eventually(lambda: h.state() is TokenState.NEEDS_REAUTH, what="needs_reauth")
    assert scripted.forms == []
    await eventually(lambda: notifications(notify_log), what="notify command")


async def test_a_clock_jump_past_the_refresh_time_is_caught_up_within_one_check_interval(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    h = await make_harness(url, issued_ago=0, expires_in=3600, clock=clock)
    due = h.refresher.next_refresh_at("srv")
    assert due is not None and due - clock() > 2000  # the scheduler's own timer is ~45 minutes away
    await asyncio.sleep(0.3)
    assert scripted.forms == []
    offset[0] = 3000.0  # the laptop slept for 50 minutes
    jumped = time.monotonic()
    await eventually(lambda: scripted.forms, timeout_s=5, what="caught-up refresh")
    # Not the scheduler's own timer (45 minutes away) but the wall-clock check (every 0.1 s); the bound is
    # loose so that a loaded machine does not fail it.
    assert time.monotonic() - jumped < 10.0
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed")


async def test_a_failing_config_write_keeps_the_new_token_and_reports_it(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    h_future = make_harness(url, issued_ago=0, expires_in=3600)
    h = await h_future
    broken = '{"mcp": {"srv": {"type": "remote",, }}'
    h.config_path.write_text(broken)
    result = await h.oauth.refresh_tokens("srv")
    assert result.__class__.__name__ == "Success"
    assert h.credential().tokens.access_token == "new-access-1"  # stored whatever the config says
    assert h.config_path.read_text() == broken  # never overwritten
    assert str(h.config_path) in h.oauth.states.get("srv").config_errors
    h.config_path.write_text('{"mcp": {"srv": {"type": "remote", "url": "http://127.0.0.1:9/mcp"}}}')  # fixed
    await eventually(
        lambda: "new-access-1" in h.config_path.read_text() and not h.oauth.states.get("srv").config_errors,
        timeout_s=5,
        what="the write retried",
    )
    assert h.header() == "Bearer new-access-1"


async def test_the_event_hook_gets_every_token_event(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path
) -> None:
    url, _ = await endpoint(respond(503), respond(200, issued(1)))
    h = await make_harness(url)
    events_log = Path(str(notify_log) + ".events")
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed")
    await eventually(lambda: len(notifications(events_log)) >= 2, what="two events")
    # Each event runs its own hook process; which one appends its line first is up to the scheduler.
    assert sorted(e["CH_STATE"] for e in notifications(events_log)) == ["refreshed", "retrying"]
    assert all(e["CH_SERVER"] == "srv" for e in notifications(events_log))
    assert not notifications(notify_log)  # nobody needs to act: no notification


async def test_a_refresh_waits_for_another_process_holding_the_lock_and_skips_if_it_refreshed(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    lock_path = h.settings.locks_dir / "srv.lock"
    async with file_lock(lock_path, timeout_s=5):  # "another daemon" is refreshing srv
        attempt = asyncio.create_task(h.oauth.refresh_once("srv", force=False, due_before=time.time() + 60))
        await asyncio.sleep(0.3)
        assert not attempt.done() and scripted.forms == []  # waiting for the lock, no request sent
        other = h.credential().model_copy(
            update={
                "tokens": OAuthTokens(
                    access_token="from-the-other-process",
                    refresh_token="other-refresh",
                    issued_at=time.time(),
                    expires_at=time.time() + 3600,
                )
            }
        )
        h.tokens.save(other)  # ...which rotated the refresh token and saved the result
    outcome = await asyncio.wait_for(attempt, 5)
    assert isinstance(outcome, RefreshNotNeeded)
    assert scripted.forms == []  # the rotated-away refresh token was never presented
    assert h.credential().tokens.refresh_token == "other-refresh"


# --- recovery: only three OAuth errors need a person ----------------------------------------------------


def html(status: int, headers: dict[str, str] | None = None) -> Any:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, text="<html><body>Not here</body></html>", content_type="text/html", headers=headers
        )

    return behaviour


def empty(status: int, headers: dict[str, str] | None = None) -> Any:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers=headers)

    return behaviour


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda: html(404), id="404-html"),
        pytest.param(lambda: empty(302, {"Location": "https://login.example/sso?x=1"}), id="302-redirect"),
        pytest.param(lambda: empty(401, {"WWW-Authenticate": "Basic"}), id="401-no-body"),
        pytest.param(lambda: html(200), id="200-html-page"),
        pytest.param(lambda: respond(400, {"error": "invalid_request"}), id="400-invalid_request"),
    ],
)
async def test_an_answer_that_is_not_a_grant_error_keeps_the_refresh_token_and_retries(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path, fault: Callable[[], Any]
) -> None:
    url, scripted = await endpoint(fault(), respond(200, issued(1)))
    h = await make_harness(url)
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed after the fault")
    assert len(scripted.forms) == 2
    assert scripted.forms[1]["refresh_token"] == OLD_REFRESH  # the refresh token survived the fault
    assert h.state() is TokenState.ACTIVE
    assert not notifications(notify_log)  # nobody was asked to log in


async def test_a_refresh_that_crashes_in_our_code_backs_off_exponentially(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    crashes: list[float] = []

    async def crash(*args: Any, **kwargs: Any) -> Any:
        crashes.append(time.monotonic())
        raise RuntimeError("a bug of ours")

    h = await make_harness(url, issued_ago=0, expires_in=3600)
    monkeypatch.setattr(h.oauth, "refresh_once", crash)
    h.refresher.trigger("srv")
    await eventually(lambda: len(crashes) >= 4, what="four crashed attempts")
    state = h.oauth.states.get("srv")
    plan = state.plan
    # The backoff grows with each crash instead of restarting at the base every time.
    assert plan is not None and state.attempts >= 4
    assert plan.due - time.time() <= h.settings.backoff_max_s + 0.1


async def test_a_manual_refresh_ending_in_needs_reauth_stops_the_background_job(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(400, {"error": "invalid_grant"}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    assert h.refresher.next_refresh_at("srv") is not None
    result = await h.oauth.refresh_tokens("srv")
    assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_GRANT
    assert h.refresher.next_refresh_at("srv") is None
    await h.refresher.trigger("srv")  # even when something fires it, the dead refresh token is not sent again
    assert (await h.oauth.refresh_tokens("srv")).code is ErrorCode.INVALID_GRANT  # type: ignore[union-attr]
    assert len(scripted.forms) == 1


async def test_a_manual_refresh_that_fails_for_now_is_retried_soon_in_the_background(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(503), respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)  # the planned refresh is 45 minutes away
    result = await h.oauth.refresh_tokens("srv")
    assert isinstance(result, Failure) and result.code is ErrorCode.NETWORK
    assert h.state() is TokenState.RETRYING
    due = h.refresher.next_refresh_at("srv")
    assert due is not None and due - time.time() <= h.settings.backoff_max_s + 0.1  # not 45 minutes
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="the retry happened")
    assert len(scripted.forms) == 2


# --- a token without refresh token is a state, not a failure ------------------------------------------


async def test_without_refresh_token_there_is_no_next_refresh_and_a_manual_refresh_says_why(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600, refresh_token=None)
    assert h.refresher.next_refresh_at("srv") is None
    result = await h.oauth.refresh_tokens("srv")
    assert isinstance(result, Failure) and result.code is ErrorCode.AUTH_REQUIRED
    assert "expires in 60m, no refresh token: run `chctl auth srv` before then" in result.error
    assert h.state() is TokenState.ACTIVE and h.refresher.next_refresh_at("srv") is None
    assert scripted.forms == []


async def test_without_refresh_token_the_person_is_told_once_before_expiry(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3, refresh_token=None)
    expires_at = h.credential().tokens.expires_at
    note = await eventually(lambda: notifications(notify_log), what="the reminder")
    told_at = time.time()
    assert told_at < expires_at  # before it expired, while logging in again still avoids an outage
    assert note[0]["CH_STATE"] == "expiring" and "no refresh token" in note[0]["CH_MESSAGE"]
    await eventually(lambda: h.state() is TokenState.NEEDS_REAUTH, what="needs_reauth after expiry")
    await h.services.notifier.drain()
    assert len(notifications(notify_log)) == 1  # once, not again at expiry
    assert scripted.forms == []


async def test_a_token_endpoint_that_forgot_the_client_drops_its_registration(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(401, {"error": "invalid_client", "error_description": "unknown client"}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    clients = ClientStore(h.settings.clients_dir)
    clients.save("srv", ClientRegistration(issuer="http://127.0.0.1:9", client_id="client-1"))
    result = await h.oauth.refresh_tokens("srv")
    assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_CLIENT
    assert "chctl auth srv" in (result.hint or "")
    assert clients.get("srv", "http://127.0.0.1:9") is None  # the next `chctl auth` registers a new client
    assert h.state() is TokenState.NEEDS_REAUTH and h.refresher.next_refresh_at("srv") is None
    assert len(scripted.forms) == 1


# --- configs repaired from what is on disk; stale state cleaned up ---------------------------------------


async def test_a_config_a_crash_left_without_the_stored_token_is_repaired_at_start(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    # The token was saved, then the daemon died before writing the config: the config has no header.
    h = await make_harness(url, issued_ago=0, expires_in=3600, wallclock_check_s=3600)
    await eventually(lambda: "Authorization" in h.config_path.read_text(), timeout_s=5, what="repair at start")
    assert h.header() == f"Bearer {OLD_ACCESS}"
    assert "// ours" in h.config_path.read_text()
    assert scripted.forms == []  # repaired from the stored token, no refresh needed


async def test_a_config_holding_an_older_token_is_repaired_at_the_next_check(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    await eventually(lambda: "Authorization" in h.config_path.read_text(), what="first write")
    h.config_path.write_text(h.config_path.read_text().replace(OLD_ACCESS, "an-older-token"))
    await eventually(lambda: h.header() == f"Bearer {OLD_ACCESS}", timeout_s=5, what="repair at a check")
    before = h.config_path.stat().st_mtime_ns
    await asyncio.sleep(0.5)  # five more checks: a config that is right is only read, never rewritten
    assert h.config_path.stat().st_mtime_ns == before


async def test_a_removed_server_keeps_its_credential_but_stops_refreshing_until_added_again(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    assert h.refresher.next_refresh_at("srv") is not None
    removed = h.oauth.mcp.remove("srv", ConfigTarget(cwd=h.config_path.parent, project=h.config_path.parent))
    assert isinstance(removed, Success)
    h.refresher.schedule("srv")  # what the daemon does after `mcp.remove`
    assert h.refresher.next_refresh_at("srv") is None
    assert h.credential().tokens.access_token == OLD_ACCESS  # kept: adding it back needs no new login
    h.oauth.mcp.bindings.bind("srv", Binding(path=str(h.config_path)))
    h.refresher.schedule("srv")
    assert h.refresher.next_refresh_at("srv") is not None
    assert scripted.forms == []


async def test_a_binding_whose_entry_is_gone_is_dropped_and_its_refresh_stops(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], tmp_path: Path
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    h.config_path.write_text('{"mcp": {}}\n')  # the entry was removed by hand (or `add` crashed before writing it)
    await eventually(lambda: not h.oauth.mcp.bindings.for_server("srv"), timeout_s=5, what="binding dropped")
    await eventually(lambda: h.refresher.next_refresh_at("srv") is None, timeout_s=5, what="refresh stopped")
    assert h.config_path.read_text() == '{"mcp": {}}\n'
    assert not h.oauth.states.get("srv").config_errors


async def test_a_login_nobody_waits_for_is_cancelled_and_frees_its_port(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    async with running_world(FakeWorld()) as world:
        # A server of its own, with no credential: the harness's `srv` has a stored login from before URLs were
        # recorded, and the repair at start records the URL its `resource` covers (127.0.0.1:9) in the
        # background; a login of `srv` then goes there, so re-pointing `srv` here raced that repair.
        config = h.config_path.with_name("other.json")
        config.write_text(f'{{"mcp": {{"fresh": {{"type": "remote", "url": "{world.server_url}"}}}}}}')
        h.oauth.mcp.bindings.bind("fresh", Binding(path=str(config), url=world.server_url))  # `chctl add`
        flows = AuthFlows(h.oauth, abandoned_after_s=0.3)
        started = await flows.start("fresh", AuthOptions(timeout_s=600))
        assert isinstance(started, Success)
        port = int(query_of(started.value["authorization_url"])["redirect_uri"].split(":")[2].split("/")[0])
        # The `chctl auth` that started it was killed: nobody calls auth.wait.
        await eventually(lambda: not flows._flows, timeout_s=5, what="the abandoned login dropped")
        wait = await flows.wait(started.value["flow_id"])
        assert isinstance(wait, Failure) and wait.code is ErrorCode.NOT_FOUND

        def port_closed() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) != 0

        await eventually(port_closed, timeout_s=5, what="the callback port closed")


# --- logout tells the truth --------------------------------------------------------------------------


async def test_logout_says_which_tokens_a_server_refusing_public_clients_did_not_revoke(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    refuse = respond(401, {"error": "invalid_client", "error_description": "client_secret is required"})
    url, scripted = await endpoint(refuse)
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    revocation = url.removesuffix("/token") + "/revoke"
    h.tokens.save(h.credential().model_copy(update={"revocation_endpoint": revocation}))
    await eventually(lambda: "Authorization" in h.config_path.read_text(), what="header written")
    expires_at = h.credential().tokens.expires_at
    with capture_logs() as logs:
        result = await h.oauth.logout("srv")
    assert isinstance(result, Success)
    assert result.value["revoked"] is False  # not "logged out (revoked)" when the server said no
    refresh, access = result.value["tokens"]
    assert (refresh["token"], refresh["revoked"]) == ("refresh_token", False)
    assert "invalid_client" in refresh["reason"] and "client_secret is required" in refresh["reason"]
    assert (access["token"], access["revoked"], access["valid_until"]) == ("access_token", False, expires_at)
    assert len(scripted.forms) == 2  # both were tried
    assert [e["reason"] for e in logs if e["event"] == "token_not_revoked"] == [refresh["reason"], access["reason"]]
    entry = parse_jsonc(h.config_path.read_text())["mcp"]["srv"]
    assert "headers" not in entry  # no empty "headers": {} left behind
    assert result.value["configs"] == {"written": [str(h.config_path)], "dropped": [], "failed": {}}
    assert OLD_ACCESS not in json.dumps(result.value) and OLD_REFRESH not in json.dumps(logs)


async def test_logout_without_a_revocation_endpoint_says_so(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, {}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    result = await h.oauth.logout("srv")
    assert isinstance(result, Success) and result.value["revoked"] is False
    assert all("no revocation endpoint" in t["reason"] for t in result.value["tokens"])
    assert scripted.forms == []


async def test_logout_reports_a_config_it_could_not_take_the_header_out_of(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], tmp_path: Path
) -> None:
    url, _ = await endpoint(respond(200, {}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    await eventually(lambda: OLD_ACCESS in h.config_path.read_text(), what="header written")
    broken = h.config_path.read_text().replace('"mcp"', '"mcp" "oops"', 1)  # a hand edit gone wrong
    h.config_path.write_text(broken)
    result = await h.oauth.logout("srv")
    assert isinstance(result, Success)
    configs = result.value["configs"]
    assert configs["written"] == [] and list(configs["failed"]) == [str(h.config_path)]
    assert OLD_ACCESS not in json.dumps(result.value)  # the reason names the file, not its secret
    assert h.config_path.read_text() == broken  # never written over


# --- client authentication that real servers accept -----------------------------------------------------


async def test_basic_authentication_also_sends_client_id_in_the_body(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    async def requires_client_id_in_body(request: web.Request) -> web.StreamResponse:
        # Like the MCP Python SDK's token handler: it reads client_id from the form, whatever the header says.
        form = await request.post()
        if not request.headers.get("Authorization", "").startswith("Basic ") or form.get("client_id") != "client-1":
            return web.json_response({"error": "invalid_client", "error_description": "Missing client_id"}, status=401)
        return web.json_response(issued(1))

    url, scripted = await endpoint(requires_client_id_in_body)
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    h.tokens.save(
        h.credential().model_copy(
            update={"client_secret": "client-secret-value", "token_endpoint_auth_method": "client_secret_basic"}
        )
    )
    result = await h.oauth.refresh_tokens("srv")
    assert isinstance(result, Success), result
    assert scripted.forms[0]["client_id"] == "client-1" and "client_secret" not in scripted.forms[0]
    assert h.header() == "Bearer new-access-1"


# --- one slow file cannot freeze the daemon ----------------------------------------------------------


async def test_a_config_on_a_hung_mount_fails_alone_and_the_loop_keeps_running(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], tmp_path: Path
) -> None:
    url, _ = await endpoint(respond(200, issued(1)))
    h = await make_harness(url, issued_ago=0, expires_in=3600, config_io_timeout_s=0.5, wallclock_check_s=3600)
    hung = tmp_path / "hung" / "opencode.json"
    hung.parent.mkdir()
    os.mkfifo(hung)  # opening it blocks until someone writes: what a read on a dead NFS mount does
    h.oauth.mcp.bindings.bind("srv", Binding(path=str(hung)))
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beating = asyncio.create_task(heartbeat())
    try:
        result = await h.oauth.refresh_tokens("srv")
    finally:
        beating.cancel()
    assert isinstance(result, Success)
    assert h.header() == "Bearer new-access-1"  # the healthy config got the new token
    assert "did not answer" in h.oauth.states.get("srv").config_errors[str(hung)]
    assert ticks >= 20  # the event loop kept running for the whole half second the write hung
    fd = os.open(hung, os.O_WRONLY | os.O_NONBLOCK)  # let the stuck thread finish: it leaves nothing blocked
    os.close(fd)
