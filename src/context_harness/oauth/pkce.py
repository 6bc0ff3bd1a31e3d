"""PKCE (RFC 7636, S256 only) and the `state` value that ties a callback to the request we sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

# 64 random bytes → 86 base64url characters: inside RFC 7636's 43–128 and well above its 256-bit floor.
VERIFIER_BYTES = 64
STATE_BYTES = 32


@dataclass(frozen=True, slots=True)
class PKCEPair:
    """A code verifier (kept secret until the token request) and its S256 challenge (sent in the URL)."""

    verifier: str = field(repr=False)
    challenge: str
    method: str = "S256"


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_pkce() -> PKCEPair:
    verifier = secrets.token_urlsafe(VERIFIER_BYTES)
    return PKCEPair(verifier=verifier, challenge=s256_challenge(verifier))


def new_state() -> str:
    return secrets.token_urlsafe(STATE_BYTES)


def states_match(received: str | None, expected: str) -> bool:
    """Constant-time compare, so the callback cannot be used as an oracle for our state."""
    if received is None:
        return False
    return hmac.compare_digest(received.encode("utf-8"), expected.encode("utf-8"))
