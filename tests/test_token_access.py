"""How long before expiry a token counts as due for a caller of `token.get` (pure)."""

from __future__ import annotations

from context_harness.primitives.oauth import OAuthTokens
from context_harness.services.token_access import margin_for


def tokens(lifetime: float | None, issued_at: float = 1_000.0) -> OAuthTokens:
    expires_at = None if lifetime is None else issued_at + lifetime
    return OAuthTokens(access_token="t", expires_at=expires_at, issued_at=issued_at)


def test_the_callers_margin_holds_for_tokens_that_live_long_enough() -> None:
    assert margin_for(tokens(3600), 60) == 60
    assert margin_for(tokens(3600), 600) == 600


def test_a_token_shorter_than_twice_the_margin_is_due_at_half_its_lifetime_not_at_every_call() -> None:
    assert margin_for(tokens(4), 60) == 2
    assert margin_for(tokens(100), 60) == 50


def test_without_a_known_issue_time_the_callers_margin_is_used_as_asked() -> None:
    assert margin_for(tokens(4, issued_at=0.0), 60) == 60
    assert not tokens(None).is_expired(margin_for(tokens(None), 60))  # no expiry: never due
