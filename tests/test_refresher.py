"""The refresher against our own fault-injecting token endpoints: outcomes, backoff, Retry-After,
needs_reauth with one notification, no retry storm, caught-up clock jumps, header publishing."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from context_harness.config.jsonc import parse_jsonc
from context_harness.daemon.notifier import Notifier
from context_harness.daemon.refresher import Refresher, backoff_delay, refresh_time
from context_harness.daemon.settings import Settings
from context_harness.oauth.http import new_session
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.services.config_service import ConfigService
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService, RefreshNotNeeded
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.client_store import ClientStore
from context_harness.stores.lock_file import file_lock
from context_harness.stores.token_store import TokenStore
from tests.oauth_fakes import ScriptedTokenEndpoint, half_response_server, hang, respond, serve

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
    made: list[tuple[Refresher, Notifier, list[aiohttp.ClientSession]]] = []

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
        settings = Settings(home=tmp_path / "ch", notify_command=recorder, **knobs)
        tokens = TokenStore(settings.tokens_dir, settings.secrets_dir)
        bindings = BindingStore(settings.bindings_file)
        config = ConfigService()
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
        mcp = MCPService(config, tokens, bindings, tmp_path / "no-registry.json")
        sessions: list[aiohttp.ClientSession] = []

        def session() -> aiohttp.ClientSession:
            if not sessions:
                sessions.append(new_session())
            return sessions[0]

        notifier = Notifier(settings.notify_command, [*recorder[:-1], str(notify_log) + ".events"])
        oauth = OAuthService(settings, tokens, ClientStore(settings.clients_dir), mcp, session, events=notifier)
        refresher = Refresher(settings, oauth, tokens, clock=clock, rng=random.Random(7))
        oauth.on_new_credential = refresher.schedule
        made.append((refresher, notifier, sessions))
        refresher.start()
        return Harness(settings, tokens, oauth, refresher, config_path)

    yield factory
    for refresher, notifier, sessions in made:
        await refresher.stop()
        await notifier.drain()
        for s in sessions:
            await s.close()


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
    credential = Credential(name="s", kind="oauth", state=TokenState.ACTIVE, tokens=tokens)
    times = [refresh_time(credential, 0.75, 0.05, rng, now=1000.0) - 1000.0 for _ in range(500)]
    assert all(2700 - 180 <= t <= 2700 + 180 for t in times)
    assert max(times) - min(times) > 200  # really jittered, not one instant for every token


def test_a_one_second_token_is_refreshed_no_sooner_than_the_minimum_spacing() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=1000.0, expires_at=1001.0)
    credential = Credential(name="s", kind="oauth", state=TokenState.ACTIVE, tokens=tokens)
    assert refresh_time(credential, 0.75, 0.05, random.Random(1), now=1000.0, min_spacing_s=10.0) == 1010.0


def test_an_absurd_expiry_counts_as_a_one_year_lifetime() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=1000.0, expires_at=1e300)
    credential = Credential(name="s", kind="oauth", state=TokenState.ACTIVE, tokens=tokens)
    due = refresh_time(credential, 0.75, 0.0, random.Random(1), now=1000.0)
    assert due == 1000.0 + 0.75 * 365 * 24 * 3600


def test_a_token_without_expiry_is_treated_as_a_one_hour_token() -> None:
    tokens = OAuthTokens(access_token="a", issued_at=500.0, expires_at=None)
    credential = Credential(name="s", kind="oauth", state=TokenState.ACTIVE, tokens=tokens)
    assert refresh_time(credential, 0.75, 0.0, random.Random(1), now=500.0) == 500.0 + 2700


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (7, 300), (20, 300)]:
        delays = [backoff_delay(attempt, 5.0, 300.0, rng) for _ in range(300)]
        assert all(0.5 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8


# --- outcomes against a scripted token endpoint -----------------------------------------------------


async def test_503_then_200_keeps_the_old_token_while_retrying_then_publishes_the_new_one(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any]
) -> None:
    url, scripted = await endpoint(respond(503), respond(200, issued(1)))
    h = await make_harness(url, backoff_base_s=2.0, backoff_max_s=2.0)  # the retry waits at least 0.2 s
    await eventually(lambda: h.oauth.runtime.get("srv") and h.state() is TokenState.RETRYING, what="retrying")
    assert len(scripted.forms) == 1
    assert h.credential().tokens.access_token == OLD_ACCESS  # old token kept while valid
    assert "Authorization" not in h.config_path.read_text()  # nothing new was published
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed")
    assert h.state() is TokenState.ACTIVE
    assert h.header() == "Bearer new-access-1"
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


async def test_connection_closed_mid_response_is_transient_and_the_token_file_stays_whole(
    make_harness: Callable[..., Any],
) -> None:
    async with half_response_server() as (base, count):
        h = await make_harness(f"{base}/token")
        await eventually(lambda: count[0] >= 3, what="retries after broken responses")
        assert h.state() is TokenState.RETRYING
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
    assert time.monotonic() - jumped < 1.0  # one check interval is 0.1 s; generous for a loaded machine
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
    assert str(h.config_path) in h.oauth.mcp.publish_errors["srv"]
    h.config_path.write_text('{"mcp": {"srv": {"type": "remote", "url": "http://127.0.0.1:9/mcp"}}}')  # fixed
    await eventually(lambda: "new-access-1" in h.config_path.read_text(), timeout_s=5, what="the write retried")
    assert h.header() == "Bearer new-access-1"
    assert "srv" not in h.oauth.mcp.publish_errors


async def test_the_event_hook_gets_every_token_event(
    make_harness: Callable[..., Any], endpoint: Callable[..., Any], notify_log: Path
) -> None:
    url, _ = await endpoint(respond(503), respond(200, issued(1)))
    h = await make_harness(url)
    events_log = Path(str(notify_log) + ".events")
    await eventually(lambda: h.credential().tokens.access_token == "new-access-1", what="refreshed")
    await eventually(lambda: len(notifications(events_log)) >= 2, what="two events")
    assert [e["CH_STATE"] for e in notifications(events_log)] == ["retrying", "refreshed"]
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
