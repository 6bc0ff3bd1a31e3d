"""UnansweredRefreshes on its own: which refresh is sent, which waits for an earlier one's answer (the end to end
cases are in tests/test_refresher.py and tests/test_enterprise_idp_e2e.py, against servers that answer late)."""

from __future__ import annotations

import asyncio

from context_harness.oauth.token_client import Refreshed, RefreshOutcome, TransientError
from context_harness.oauth.unanswered import Send, UnansweredRefreshes
from context_harness.primitives.oauth import OAuthTokens


class Server:
    """Records each refresh sent; each is answered when its future is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.pending: list[asyncio.Future[RefreshOutcome]] = []

    def send_with(self, token: str) -> Send:
        async def send(total_s: float, connect_s: float) -> tuple[RefreshOutcome, str | None]:
            self.sent.append(token)
            answer: asyncio.Future[RefreshOutcome] = asyncio.get_running_loop().create_future()
            self.pending.append(answer)
            return await answer, None

        return send


def refreshed(n: int) -> Refreshed:
    return Refreshed(OAuthTokens(access_token=f"at-{n}", refresh_token=f"rt-{n}"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_that_ends_without_an_answer_lets_the_next_attempt_send_again() -> None:
    taken: list[str] = []

    async def on_late(name: str) -> None:
        taken.append(name)

    unanswered, server = UnansweredRefreshes(on_late), Server()
    first, _ = await unanswered.refresh("srv", "rt-1", server.send_with("rt-1"), 0.05)
    assert isinstance(first, TransientError) and unanswered.waiting("srv")
    second, _ = await unanswered.refresh("srv", "rt-1", server.send_with("rt-1"), 0.05)
    assert isinstance(second, TransientError) and "still awaited" in second.reason and server.sent == ["rt-1"]
    server.pending[0].set_result(TransientError("the connection failed"))  # ended with no answer at all
    await settle()
    assert not unanswered.waiting("srv") and taken == []  # nothing to take: the planned attempt sends anew
    third = asyncio.create_task(unanswered.refresh("srv", "rt-1", server.send_with("rt-1"), 1.0))
    await settle()
    server.pending[1].set_result(refreshed(2))
    assert isinstance((await third)[0], Refreshed) and server.sent == ["rt-1", "rt-1"]


async def test_a_late_answer_is_taken_at_once_and_a_new_logins_token_is_never_held_back() -> None:
    taken: list[str] = []

    async def on_late(name: str) -> None:
        taken.append(name)

    unanswered, server = UnansweredRefreshes(on_late), Server()
    await unanswered.refresh("srv", "rt-1", server.send_with("rt-1"), 0.05)
    server.pending[0].set_result(refreshed(2))
    await settle()
    assert taken == ["srv"]  # the owner is asked to take it now
    late, _ = await unanswered.refresh("srv", "rt-1", server.send_with("rt-1"), 0.05)
    assert isinstance(late, Refreshed) and late.tokens.refresh_token == "rt-2" and server.sent == ["rt-1"]

    await unanswered.refresh("srv", "rt-2", server.send_with("rt-2"), 0.05)  # awaited again...
    fresh = asyncio.create_task(unanswered.refresh("srv", "rt-new-login", server.send_with("rt-new-login"), 1.0))
    await settle()
    assert server.sent == ["rt-1", "rt-2", "rt-new-login"]  # ...but a token stored since is sent at once
    server.pending[2].set_result(refreshed(3))
    assert isinstance((await fresh)[0], Refreshed)
    server.pending[1].set_result(refreshed(9))  # the old request's answer, now of no use: nobody is asked to take it
    await settle()
    assert taken == ["srv"] and not unanswered.waiting("srv")
