"""One record per server and one change channel: the record's transitions (pure, below first), the refresher
planning from the server's state whoever made the change, a change that does not move a plan's basis leaving
the plan as it was, and a refresh that raises or is cancelled leaving no refresh under way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from context_harness.primitives.oauth import Credential, OAuthTokens, TokenEvent, TokenState
from context_harness.services.refresh_outcomes import RefreshDone, RefreshRetry
from context_harness.services.server_state import (
    Change,
    Idle,
    NeedsLogin,
    Plan,
    Refreshing,
    Retrying,
    ServerState,
    ServerStates,
)
from tests import test_refresher as base
from tests.oauth_fakes import hang, respond

OLD_ACCESS, eventually = base.OLD_ACCESS, base.eventually
make_harness, endpoint, notify_log = base.make_harness, base.endpoint, base.notify_log  # the refresher's fixtures


def _credential(state: TokenState = TokenState.ACTIVE, last_error: str | None = None) -> Credential:
    tokens = OAuthTokens(access_token="a", refresh_token="r")
    return Credential(name="srv", kind="oauth", state=state, tokens=tokens, last_error=last_error)


# --- the record's transitions (pure) ---------------------------------------------------------------------


def test_a_failed_refresh_is_a_retry_whose_attempts_grow_through_the_next_refresh() -> None:
    state = ServerState("srv")
    with state.refreshing(10.0):
        assert state.phase == Refreshing(10.0) and state.effective_state(_credential()) is TokenState.REFRESHING
        change = state.failed("HTTP 503", 30.0, "srv: refresh failed, retrying (HTTP 503)")
    assert change == Change("srv", TokenEvent.RETRYING, "srv: refresh failed, retrying (HTTP 503)")
    assert state.phase == Retrying(1, 30.0, "HTTP 503") and state.refreshed_at == 10.0
    with state.refreshing(20.0):  # the retry: the backoff it continues stays readable (the plan's basis)
        assert (state.attempts, state.retry_after, state.error) == (1, 30.0, "HTTP 503")
        state.failed("HTTP 502")
    assert state.phase == Retrying(2, None, "HTTP 502")
    assert state.effective_state(_credential()) is TokenState.RETRYING


def test_a_failure_of_our_own_counts_for_the_backoff_and_keeps_the_servers_error_shown() -> None:
    state = ServerState("srv")
    state.failed("HTTP 503")
    assert state.failed(None) == Change("srv")  # nothing to tell people
    assert state.phase == Retrying(2, None, "HTTP 503")


def test_a_refresh_left_without_an_outcome_goes_back_to_the_phase_before() -> None:
    state = ServerState("srv")
    with pytest.raises(OSError), state.refreshing(5.0):
        raise OSError("No space left on device")
    assert state.phase == Idle() and state.refreshed_at == 5.0  # the spacing of refreshes still counts it
    state.failed("HTTP 503")
    with pytest.raises(asyncio.CancelledError), state.refreshing(6.0):
        raise asyncio.CancelledError
    assert state.phase == Retrying(1, None, "HTTP 503")


def test_a_stored_credential_ends_everything_live_and_is_announced_for_the_configs() -> None:
    state = ServerState("srv")
    state.failed("HTTP 503")
    state.login_ended("login failed: access_denied")
    state.refused(401, "refused")
    state.reminded_of_expiry()
    version = state.version
    change = state.stored(TokenEvent.REFRESHED, "srv: token refreshed")
    assert change == Change("srv", TokenEvent.REFRESHED, "srv: token refreshed", credential=True)
    assert state.phase == Idle() and state.attempts == 0 and state.version == version + 1
    assert (state.failed_login, state.refusal, state.reminded) == (None, None, False)


def test_needs_login_is_one_answer_from_the_live_phase_or_the_stored_credential() -> None:
    state = ServerState("srv")
    stored_says = _credential(TokenState.NEEDS_REAUTH, "invalid_grant: revoked")
    assert state.effective_state(stored_says) is TokenState.NEEDS_REAUTH  # a restart: only the file says it
    assert state.login_reason(stored_says) == "invalid_grant: revoked"
    state.failed("HTTP 503")
    assert state.effective_state(stored_says) is TokenState.NEEDS_REAUTH  # the file wins over a retry
    change = state.needs_login("invalid_grant: gone", "srv needs a new login", saved=True)
    assert change == Change("srv", TokenEvent.NEEDS_REAUTH, "srv needs a new login")
    assert state.phase == NeedsLogin("invalid_grant: gone") and state.version == 1
    assert state.effective_state(_credential()) is TokenState.NEEDS_REAUTH
    assert state.login_reason(_credential()) == state.error == "invalid_grant: gone"
    state.failed(None)  # the lock was busy meanwhile: a login is still what is needed
    state.refreshed_elsewhere()
    assert state.phase == NeedsLogin("invalid_grant: gone")
    assert ServerState("x").login_reason(_credential()) is None


def test_someone_elses_refresh_ends_the_backoff_and_the_reminder() -> None:
    state = ServerState("srv")
    state.failed("HTTP 503")
    state.reminded_of_expiry("srv: expires soon")
    assert state.refreshed_elsewhere() == Change("srv")
    assert state.phase == Idle() and not state.reminded


def test_the_servers_answers_are_news_once() -> None:
    state = ServerState("srv")
    assert state.want_scopes(["a"], "wants a") == Change("srv", TokenEvent.SCOPE_NEEDED, "wants a")
    assert state.want_scopes(["a"], "wants a") is None
    state.want_scopes(["b", "a"], "wants b")
    assert state.scopes_wanted == ("a", "b")
    assert state.refused(403, "forbidden") == Change("srv") and state.refused(403, "forbidden") is None
    assert state.accepted() == Change("srv") and state.accepted() is None
    state.logged_in("srv: logged in")
    assert state.scopes_wanted == ()


def test_configs_and_bridges_are_kept_through_the_record() -> None:
    state = ServerState("srv")
    told = Change("srv", TokenEvent.URL_CHANGED, "points away")
    assert state.entry_url_changed("/a", "points away", news=True) == told
    assert state.entry_url_changed("/a", "points away", news=False) is None
    state.configs_written({"/a": "points away", "/b": "read-only"})
    assert dict(state.config_errors) == {"/a": "points away", "/b": "read-only"} and set(state.url_changed) == {"/a"}
    state.configs_written({"/b": "read-only"})  # /a pointed back by hand
    assert set(state.url_changed) == set()
    state.config_cleared("/b")
    assert dict(state.config_errors) == {}
    counters = state.bridge_opened(7)
    assert state.bridges == {7: counters}
    state.bridge_closed(7)
    assert state.bridges == {}
    state.planned(Plan(1.0))
    assert state.plan == Plan(1.0)


async def test_the_channel_carries_what_the_record_decided() -> None:
    states, heard = ServerStates(), []

    async def listener(change: Change) -> None:
        heard.append(change)

    states.subscribe(listener)
    await states.announce(states.get("srv").accepted())  # no refusal: nothing to tell
    await states.announce(states.get("srv").stored())
    assert heard == [Change("srv", credential=True)]


# --- against a real token endpoint ------------------------------------------------------------------------


async def test_a_renewal_cancelled_while_the_token_endpoint_hangs_leaves_no_refresh_under_way(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint()
    scripted.script.append(hang(scripted, 60.0))
    h = await make_harness(url, issued_ago=0, expires_in=3600, http_timeout_s=60.0)
    # A bridged request's 401 renews the token; the bridge closes (its task cancelled) while the server hangs.
    renewal = asyncio.ensure_future(h.oauth.refresh_unless_replaced("srv", OLD_ACCESS))
    await eventually(lambda: scripted.forms, what="the refresh request at the token endpoint")
    assert h.state() is TokenState.REFRESHING
    renewal.cancel()
    with pytest.raises(asyncio.CancelledError):
        await renewal
    assert h.state() is TokenState.ACTIVE
    assert h.services.status.server("srv", expects_login=True).state == "active"


async def test_a_refresh_that_raises_is_backed_off_not_left_refreshing(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, scripted = await endpoint(respond(200, {"access_token": "new-access-1", "token_type": "Bearer"}))
    h = await make_harness(url, issued_ago=0, expires_in=3600, backoff_base_s=0.5, backoff_max_s=0.5)
    store = h.services.vault.store

    async def disk_full(credential: Credential, *, rotation: bool = False) -> Any:
        raise OSError(28, "No space left on device")  # a bug of ours, or the machine's: the refresh raises

    monkeypatch.setattr(h.services.vault, "store", disk_full)
    task = h.refresher.trigger("srv")
    assert task is not None
    await task
    assert h.state() is TokenState.RETRYING and h.services.states.get("srv").attempts == 1
    planned = h.refresher.next_refresh_at("srv")
    assert planned is not None and planned <= time.time() + 1.0  # the backoff plan, not the token's
    monkeypatch.setattr(h.services.vault, "store", store)
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="the background retry")
    await eventually(lambda: h.state() is TokenState.ACTIVE, what="the state settled")
    assert len(scripted.forms) == 2


async def test_a_change_that_does_not_touch_the_plan_keeps_its_time(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(200, {"access_token": "a", "token_type": "Bearer"}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    before = h.refresher.next_refresh_at("srv")
    assert before is not None
    for _ in range(5):  # e.g. `chctl add srv` into more configs: the jitter is not drawn again each time
        await h.services.states.changed("srv")
    assert h.refresher.next_refresh_at("srv") == before
    assert scripted.forms == []


async def test_a_bridge_renewal_that_failed_for_now_puts_the_server_on_the_backoff_plan(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(503), respond(200, {"access_token": "new-access-1", "token_type": "Bearer"}))
    h = await make_harness(url, issued_ago=0, expires_in=3600, backoff_base_s=0.5, backoff_max_s=0.5)
    far = h.refresher.next_refresh_at("srv")
    assert far is not None and far > time.time() + 1000
    # A bridge's upstream refused the token: the renewal fails for now.
    attempt = await h.oauth.refresh_unless_replaced("srv", OLD_ACCESS)
    assert isinstance(attempt, RefreshRetry)
    state = h.services.states.get("srv")
    assert isinstance(state.phase, Retrying) and state.attempts == 1
    planned = h.refresher.next_refresh_at("srv")
    assert planned is not None and planned <= time.time() + 1.0  # the backoff, not the old plan 45 min away
    # The refresher retries from that plan without anyone asking, and the state settles.
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="the background retry")
    await eventually(lambda: state.attempts == 0 and state.phase == Idle(), what="the state settled")
    assert len(scripted.forms) == 2


async def test_the_channel_writes_the_new_header_before_anyone_hears_of_the_refresh(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, _ = await endpoint(respond(200, {"access_token": "new-access-1", "token_type": "Bearer", "expires_in": 3600}))
    h = await make_harness(url, issued_ago=0, expires_in=3600)
    heard: list[tuple[str, str]] = []

    async def last(change: Change) -> None:  # subscribed after build_services' listeners: awaited after them
        if change.event is not None:
            heard.append((change.event.value, h.header()))

    h.services.states.subscribe(last)
    assert isinstance(await h.oauth.refresh_once("srv", force=True), RefreshDone)
    assert heard == [("refreshed", "Bearer new-access-1")]  # the publisher (first listener) had written it
