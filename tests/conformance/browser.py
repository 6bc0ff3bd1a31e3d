"""BROWSER for the conformance adapters: `browser.py URL` follows the authorization server's redirect to the
client's callback, as a person's browser would: the suite's authorization servers redirect `/authorize`
straight to the redirect URI (no login page). Exit 0 once the callback answered."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin

LOGIN_TIMEOUT_S = 20


class _Stop(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the redirect is read, not followed: the callback may not listen yet


def follow_login(url: str, callback_wait_s: float = 0.0) -> int:
    """GET the authorization URL, then the callback it redirects to (retried for `callback_wait_s` while the
    client's listener is not up yet); the callback's status."""
    try:
        urllib.request.build_opener(_Stop).open(url, timeout=LOGIN_TIMEOUT_S)  # noqa: S310 (the client's own URL)
        raise OSError(f"the authorization server did not redirect: {url}")
    except urllib.error.HTTPError as redirect:
        if not 300 <= redirect.code < 400 or "Location" not in redirect.headers:
            raise
        callback = urljoin(url, redirect.headers["Location"])
    deadline = time.monotonic() + callback_wait_s
    while True:
        try:
            with urllib.request.urlopen(callback, timeout=LOGIN_TIMEOUT_S) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.URLError as refused:
            if isinstance(refused, urllib.error.HTTPError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the client's callback listener is still starting


if __name__ == "__main__":
    sys.exit(0 if follow_login(sys.argv[1]) < 400 else 1)
