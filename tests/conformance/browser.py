"""BROWSER for the conformance adapters: `browser.py URL` follows the authorization server's redirect to the
client's callback, as a person's browser would: the suite's authorization servers redirect `/authorize`
straight to the redirect URI (no login page). Exit 0 once the callback answered."""

from __future__ import annotations

import sys
import urllib.request

LOGIN_TIMEOUT_S = 20


def follow_login(url: str) -> int:
    """GET the authorization URL, following its redirects to the client's callback; the callback's status."""
    with urllib.request.urlopen(url, timeout=LOGIN_TIMEOUT_S) as answer:  # noqa: S310 (the client's own URL)
        return int(answer.status)


if __name__ == "__main__":
    sys.exit(0 if follow_login(sys.argv[1]) < 400 else 1)
