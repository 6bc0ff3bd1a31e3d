import base64
import hashlib
import re

from context_harness.oauth.pkce import generate_pkce, new_state, s256_challenge, states_match


def test_verifier_is_unreserved_and_within_rfc7636_length() -> None:
    for _ in range(50):
        pair = generate_pkce()
        assert 43 <= len(pair.verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", pair.verifier)
        assert pair.method == "S256"


def test_challenge_is_base64url_sha256_without_padding() -> None:
    # RFC 7636 appendix B's example.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pair = generate_pkce()
    digest = base64.urlsafe_b64encode(hashlib.sha256(pair.verifier.encode()).digest()).rstrip(b"=").decode()
    assert pair.challenge == digest


def test_pairs_and_states_are_unique() -> None:
    assert len({generate_pkce().verifier for _ in range(100)}) == 100
    assert len({new_state() for _ in range(100)}) == 100
    assert len(new_state()) >= 32


def test_verifier_is_not_in_repr() -> None:
    pair = generate_pkce()
    assert pair.verifier not in repr(pair)


def test_states_match_only_exactly() -> None:
    state = new_state()
    assert states_match(state, state)
    assert not states_match(state + "x", state)
    assert not states_match(None, state)
    assert not states_match("", state)
    assert not states_match("é", state)  # non-ASCII input must not raise
