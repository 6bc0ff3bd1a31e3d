"""The test suite's "browser": it signs in and consents on oidc-provider's dev interaction pages.

As a library:
    redirect = await complete_consent(authorization_url)            # approve
    redirect = await complete_consent(authorization_url, deny=True) # click [ Cancel ]
returns the URL the authorization server redirected to (the client's redirect_uri with
code/state/iss or error=...), without fetching it.

As the browser Python's `webbrowser` opens (webbrowser splits $BROWSER on os.pathsep, shlex-splits an
entry that contains %s, and substitutes the URL; no shell is involved):
    BROWSER="/abs/python /abs/tests/peers/fake_browser.py %s &"
The trailing " &" makes webbrowser start it in the background (BackgroundBrowser) instead of waiting
for it (GenericBrowser waits for the command to exit, which deadlocks a caller that serves the
callback on the same thread). See browser_command().
After the consent pages it GETs the callback URL (retrying a refused or reset connection) and exits 0
once the callback answered with any HTTP status, 1 otherwise.

Environment options for the __main__ form:
    FAKE_BROWSER_DENY=1           click cancel on the consent page (error=access_denied)
    FAKE_BROWSER_LOGIN=name       the login name (default alice)
    FAKE_BROWSER_LOG=path         append one JSON line per callback visit: {"status", "error",
                                  "params", "pid"}; the values of code/state never appear (secrets)
    FAKE_BROWSER_CALLBACK_TIMES=N fetch the callback N times (default 1; 2 = "callback hit twice")
    FAKE_BROWSER_SKIP_CALLBACK=1  stop after the consent pages (the user closed the tab: flow timeout)
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

try:  # as a module of the test suite, or run as a script from tests/peers
    from tests.peers.mapped_hosts import connector as mapped_connector
except ImportError:
    from mapped_hosts import connector as mapped_connector  # type: ignore[no-redef]

MAX_STEPS = 12  # authorize -> login -> resume -> consent -> resume -> redirect is 6 hops
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
CALLBACK_DEADLINE_S = 10.0  # the callback listener may still be starting when the browser arrives


class ConsentError(RuntimeError):
    """The authorization server showed an error page or something this browser cannot drive."""


class _PageParser(HTMLParser):
    """Collects the first form's action and hidden fields, and the [ Cancel ] (abort) link."""

    def __init__(self) -> None:
        super().__init__()
        self.form_action: str | None = None
        self.fields: dict[str, str] = {}
        self.abort_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form_action is None:
            self.form_action = attributes.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("type") == "hidden":
            self.fields[attributes.get("name", "")] = attributes.get("value", "")
        elif tag == "a" and attributes.get("href", "").endswith("/abort"):
            self.abort_href = attributes["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _error_text(html: str) -> str:
    # oidc-provider's error page shows "oops! something went wrong" then the error code in <pre>.
    start = html.find("<pre>")
    end = html.find("</pre>", start)
    return html[start + 5 : end].strip()[:300] if start != -1 and end != -1 else html[:300]


async def complete_consent(
    authorization_url: str,
    *,
    deny: bool = False,
    login: str = "alice",
    password: str = "any-password",
) -> str:
    """Drive login + consent for `authorization_url`; return the redirect to the client, unfetched.

    A fresh cookie jar each call, so there is never a remembered session or grant: the login and
    consent pages are always shown. With deny=True the user signs in, then cancels the consent.
    """
    server_origin = _origin(authorization_url)
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keep cookies for an IP-address host
    connector = mapped_connector(force_close=True)  # Node drops idle keep-alives after 5 s
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector, timeout=HTTP_TIMEOUT) as http:
        url, form = authorization_url, None
        for _ in range(MAX_STEPS):
            method = "POST" if form is not None else "GET"
            async with http.request(method, url, data=form, allow_redirects=False) as response:
                if response.status in REDIRECT_STATUSES:
                    url = urljoin(url, response.headers["Location"])
                    if _origin(url) != server_origin:
                        return url
                    form = None
                    continue
                html = await response.text()
            if response.status != 200:
                raise ConsentError(f"authorization server answered {response.status}: {_error_text(html)}")
            page = _PageParser()
            page.feed(html)
            prompt = page.fields.get("prompt")
            if page.form_action is None or prompt not in ("login", "consent"):
                raise ConsentError(f"unexpected page at {urlsplit(url).path}: {_error_text(html)}")
            if prompt == "consent" and deny:
                if page.abort_href is None:
                    raise ConsentError("consent page has no cancel link")
                url, form = urljoin(url, page.abort_href), None
                continue
            form = dict(page.fields)
            if prompt == "login":
                form |= {"login": login, "password": password}
            url = urljoin(url, page.form_action)
    raise ConsentError(f"no redirect to the client after {MAX_STEPS} steps")


def browser_command(python: str = sys.executable) -> str:
    """The $BROWSER value that makes Python's webbrowser open URLs with this fake browser."""
    return f"{shlex.quote(python)} {shlex.quote(str(Path(__file__).resolve()))} %s &"


async def _fetch_callback(http: aiohttp.ClientSession, url: str, *, retry: bool) -> int:
    deadline = time.monotonic() + (CALLBACK_DEADLINE_S if retry else 0.0)
    while True:
        try:
            async with http.get(url, allow_redirects=False) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # a listener that is still binding: retry, bounded by the deadline


def _log(record: dict[str, object]) -> None:
    path = os.environ.get("FAKE_BROWSER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")


async def _main(url: str) -> int:
    try:
        redirect = await complete_consent(
            url,
            deny=os.environ.get("FAKE_BROWSER_DENY") == "1",
            login=os.environ.get("FAKE_BROWSER_LOGIN", "alice"),
        )
    except (TimeoutError, ConsentError, aiohttp.ClientError) as error:
        _log({"status": None, "error": f"consent failed: {type(error).__name__}", "params": [], "pid": os.getpid()})
        print(f"fake_browser: consent failed: {error}", file=sys.stderr)
        return 1
    query = parse_qs(urlsplit(redirect).query)
    record: dict[str, object] = {"error": query.get("error", [None])[0], "params": sorted(query), "pid": os.getpid()}
    if os.environ.get("FAKE_BROWSER_SKIP_CALLBACK") == "1":
        _log(record | {"status": None, "skipped": True})
        return 0
    times = int(os.environ.get("FAKE_BROWSER_CALLBACK_TIMES", "1"))
    connector = mapped_connector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT) as http:
        answered = False
        for attempt in range(times):
            # Only the first visit waits for a listener still starting; a repeat visit to a closed
            # listener is refused at once, which is what the "callback hit twice" tests expect.
            try:
                status = await _fetch_callback(http, redirect, retry=attempt == 0)
            except (TimeoutError, aiohttp.ClientError) as error:
                _log(record | {"status": None, "callback_error": type(error).__name__})
                continue
            answered = answered or attempt == 0
            _log(record | {"status": status})
    return 0 if answered else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: fake_browser.py AUTHORIZATION_URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(_main(sys.argv[1])))
