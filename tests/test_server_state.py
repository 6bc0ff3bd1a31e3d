"""One record per server and one change channel: the refresher plans from the server's state, whoever made
the change, and a change that does not move a plan's basis leaves the plan as it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from context_harness.primitives.oauth import TokenState
from context_harness.services.refresh_outcomes import RefreshDone, RefreshRetry
from context_harness.services.server_state import Change
from tests import test_refresher as base
from tests.oauth_fakes import respond

OLD_ACCESS, eventually = base.OLD_ACCESS, base.eventually
make_harness, endpoint, notify_log = base.make_harness, base.endpoint, base.notify_log  # the refresher's fixtures


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
    assert state.phase is TokenState.RETRYING and state.attempts == 1
    planned = h.refresher.next_refresh_at("srv")
    assert planned is not None and planned <= time.time() + 1.0  # the backoff, not the old plan 45 min away
    # The refresher retries from that plan without anyone asking, and the state settles.
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="the background retry")
    await eventually(lambda: state.attempts == 0 and state.phase is None, what="the state settled")
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
