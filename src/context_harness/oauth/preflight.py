"""Ask the authorization endpoint for the login page ourselves before sending a person there.

A server that no longer knows our client (it restarted, the registration expired or was deleted), or
that does not accept our redirect URI, answers the authorization request with an error page of its own:
it must not redirect to a URI it cannot trust (RFC 6749 §4.1.2.1). The person sees that page, and we
would only see a timeout. Fetched here first, without following redirects and without cookies, the
same answer is a 400/401 we can act on: register again, or say which client or redirect URI is wrong.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import structlog

from context_harness.net.session import cookieless_like
from context_harness.oauth import http
from context_harness.primitives.result import Failure
from context_harness.primitives.text import printable

log = structlog.get_logger(__name__)

# A refusal that is about the request itself; a 403 (a bot wall), 404 or 5xx says nothing about our client.
REFUSING_STATUSES = frozenset({400, 401})
# Errors in a redirect back to us that mean the server does not accept this client.
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


# The start of the page's text goes into one line of our error: what the person would have read first.
PAGE_TEXT_LIMIT = 160


def page_text(body: bytes) -> str:
    """The readable words of an error page or JSON error, bounded: what the person would have read."""
    text = body[:4096].decode("utf-8", "replace")
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    words = (printable(word, ascii_only=True) for word in html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    return " ".join(word for word in words if word)[:PAGE_TEXT_LIMIT]


def refusal(status: int, headers: Mapping[str, str], body: bytes, redirect_uri: str) -> str | None:
    """Why the server refused the authorization request, or None when it went on (a login page, a
    redirect to its sign-in) or when we cannot tell."""
    if status in REFUSING_STATUSES:
        detail = page_text(body)
        return f"HTTP {status}" + (f": {detail}" if detail else "")
    location = headers.get("Location", "")
    if 300 <= status < 400 and location.startswith(redirect_uri):
        error = dict(parse_qsl(urlsplit(location).query)).get("error")
        if error in CLIENT_ERRORS:
            return error
    return None


async def check_authorization_request(
    session: aiohttp.ClientSession, url: str, redirect_uri: str, timeout_s: float
) -> str | None:
    """Why the authorization server refuses `url` (see `refusal`); None when it does not, or when it
    cannot be asked (then the browser simply tries). Asked without `session`'s cookies, through its network."""
    async with cookieless_like(session) as probe:
        sent = await http.request(probe, "GET", url, headers={"Accept": "text/html"}, timeout_s=timeout_s)
    if isinstance(sent, Failure):
        log.info("authorization_request_not_checked", reason=sent.error)
        return None
    reason = refusal(sent.value.status, sent.value.headers, sent.value.body, redirect_uri)
    if reason is not None:
        log.warning("authorization_request_refused", status=sent.value.status)
    return reason
