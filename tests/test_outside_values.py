"""The gate for values from outside: real token shapes pass, anything a client would substitute never does."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from context_harness.config.format import CLIENTS, get_format, substitutions
from context_harness.oauth.token_client import issued_token_problem
from context_harness.primitives.oauth import OAuthTokens
from context_harness.primitives.outside_values import credential_problem, url_problem

MARKERS = substitutions()
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))

# Tokens as real authorization servers issue them.
REAL_TOKENS = {
    # oidc-provider: an opaque nanoid (43 characters of base64url).
    "oidc-provider": "Rk3nQ0yS6WmB1pVdX8cJtL2hZ9aE4uGfK7oN5iHq_-M",
    # Cloudflare workers-oauth-provider: `${userId}:${grantId}:${secret}`.
    "workers-oauth-provider": "user-8d2f:Vq7RnK3xPzT1bW9c:Ms0dLh4GkYe2Ja6NfQ8rUt1Xw5Cv3Bz",
    # The MCP SDKs' example providers: `mcp_` + token_hex(32), a UUID.
    "mcp-python-sdk": "mcp_" + "0f" * 32,
    "mcp-typescript-sdk": "2b1c6f0e-7a4d-4c1b-9e3f-5d8a2c7b6e10",
    # A JWT access token (RFC 9068).
    "jwt": "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl",
}


def tokens(access: str) -> OAuthTokens:
    return OAuthTokens(access_token=access, token_type="Bearer", issued_at=0.0)


@pytest.mark.parametrize("issuer", sorted(REAL_TOKENS))
def test_real_token_shapes_are_accepted(issuer: str) -> None:
    assert issued_token_problem(tokens(REAL_TOKENS[issuer]), MARKERS) is None


def test_the_refusal_set_is_every_clients_substitutions() -> None:
    expected = {marker for client in CLIENTS for marker in get_format(client).substitutions}
    assert set(MARKERS) == expected
    assert {"{env:", "{file:", "${", "$"} <= expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("{env:ANTHROPIC_API_KEY}", "opencode"),
        ("{file:~/.ssh/id_ed25519}", "opencode"),
        ("${HOME}", "Claude Code"),
        ("${HOME}", "Cursor"),
        ("x$GEMINI_API_KEY", "Gemini CLI"),
    ],
)
def test_a_marker_names_the_client_that_would_substitute_it(value: str, named: str) -> None:
    problem = issued_token_problem(tokens(value), MARKERS)
    assert problem is not None and named in problem and value not in problem


@pytest.mark.parametrize("value", ["", "a b", "a\tb", "a\r\nX-Evil: 1", "a\x00", "caf\u00e9", "a\u202eb", "a\x7f"])
def test_whitespace_control_and_non_ascii_are_refused(value: str) -> None:
    assert credential_problem(value, MARKERS) is not None


@given(st.text(alphabet=VISIBLE, min_size=1))
def test_every_visible_ascii_string_without_a_marker_is_accepted(value: str) -> None:
    has_marker = any(marker in value for marker in MARKERS)
    assert (credential_problem(value, MARKERS) is None) is not has_marker


@given(st.text(min_size=1), st.sampled_from(sorted(MARKERS)), st.text())
def test_a_marker_is_never_accepted(before: str, marker: str, after: str) -> None:
    assert credential_problem(before + marker + after, MARKERS) is not None


@given(st.text(), st.sampled_from([chr(c) for c in [*range(0x20), 0x7F]] + list(string.whitespace)), st.text())
def test_a_control_character_or_whitespace_is_never_accepted(before: str, bad: str, after: str) -> None:
    assert credential_problem(before + bad + after, MARKERS) is not None


@given(st.text(alphabet=VISIBLE), st.sampled_from(sorted(MARKERS)), st.text(alphabet=VISIBLE))
def test_a_url_with_a_marker_is_never_accepted(before: str, marker: str, after: str) -> None:
    url = "https://mcp.example/" + before + marker + after
    assert url_problem(url, MARKERS, carries_secret=False) is not None


@given(st.text(), st.sampled_from([chr(c) for c in [*range(0x21), 0x7F]]), st.text())
def test_a_url_with_a_control_character_or_space_is_never_accepted(before: str, bad: str, after: str) -> None:
    assert url_problem("https://mcp.example/" + before + bad + after, MARKERS, carries_secret=False) is not None


@pytest.mark.parametrize(
    ("url", "carries_secret", "fine"),
    [
        ("https://mcp.example/mcp", True, True),
        ("http://127.0.0.1:8931/mcp", True, True),
        ("http://[::1]:8931/mcp", True, True),
        ("http://wiki.corp:8080/mcp", False, True),  # no credential travels: the cleartext rule does not apply
        ("http://wiki.corp:8080/mcp", True, False),
        ("http://127.0.0.1.evil.example/mcp", True, False),
        ("ftp://mcp.example/mcp", False, False),
        ("https:///mcp", False, False),
        ("http://[::1/mcp", False, False),
    ],
)
def test_the_cleartext_rule_and_the_shape_of_a_url(url: str, carries_secret: bool, fine: bool) -> None:
    assert (url_problem(url, MARKERS, carries_secret=carries_secret) is None) is fine
