"""The loopback listener that receives one authorization response (RFC 8252 §7.3), then closes.

It listens on 127.0.0.1 only, serves one path, takes the first response that carries `code` or
`error` and answers every later one with "already used". A redirect URL pasted by the user
(headless login) can be delivered instead; whichever arrives first wins.
"""

from __future__ import annotations

import asyncio
import errno
import html
import socket
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

import structlog
from aiohttp import web

from context_harness.oauth.pkce import states_match
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

log = structlog.get_logger(__name__)

LOOPBACK_HOST = "127.0.0.1"
CALLBACK_PATH = "/callback"
# How long the browser's request is held open for the flow's verdict (token exchange included).
VERDICT_WAIT_S = 30.0
# The page carries no links or scripts; these keep the code-bearing URL out of caches and referrers.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def page(title: str, message: str) -> str:
    """A minimal human page; both strings are HTML-escaped here."""
    t, m = html.escape(title), html.escape(message)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{t}</title><style>body{{font-family:sans-serif;margin:3em}}</style></head>"
        f"<body><h1>{t}</h1><p>{m}</p></body></html>"
    )


def describe_response(query: Mapping[str, str]) -> tuple[str, str]:
    """Title and message for the browser: never echoes the code or state, only the server's error."""
    error = query.get("error")
    if error is None:
        return "Authorization received", "Return to the terminal to see whether sign-in finished."
    if error == "access_denied":
        return "Access declined", "You declined the request, so nothing was connected. You can close this tab."
    description = query.get("error_description") or ""
    detail = f" ({description[:200]})" if description else ""
    return "Sign-in failed", f"The authorization server reported: {error[:64]}{detail}. You can close this tab."


def query_from_pasted_url(text: str) -> Result[dict[str, str]]:
    """The query of a redirect URL the user pasted (the whole URL, or just its `?…` part)."""
    text = text.strip()
    query = urlsplit(text).query if "://" in text else text.lstrip("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if "code" not in params and "error" not in params:
        return Failure(
            "the pasted text is not an authorization redirect (no code or error in it)",
            ErrorCode.INVALID_PARAMS,
            "paste the whole address from the browser's address bar after approving",
        )
    return Success(params)


class CallbackServerError(Exception):
    """Raised only by `async with` when the listener cannot start; `start()` returns the Failure instead."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


class CallbackServer:
    """`async with CallbackServer(port) as server: uri = server.redirect_uri; query = await server.wait(t)`."""

    def __init__(self, port: int = 0, path: str = CALLBACK_PATH) -> None:
        self.requested_port = port
        self.path = path
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._result: asyncio.Future[dict[str, str]] | None = None
        self._verdict: asyncio.Future[tuple[str, str]] | None = None
        # Once set, only a response carrying this `state` is taken: any local process or web page can send
        # a request here, and a forged one must neither end the login nor feed it a code.
        self.expected_state: str | None = None

    @property
    def redirect_uri(self) -> str:
        if self.port is None:
            raise RuntimeError("CallbackServer.start() has not succeeded")
        return f"http://{LOOPBACK_HOST}:{self.port}{self.path}"

    async def start(self) -> Result[str]:
        """Listen; the redirect URI on success. A busy fixed port is INVALID_PARAMS: the fix is another --port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A port our previous login used sits in TIME_WAIT for a minute; without this a second `chctl auth`
        # could not listen on it (another listener on it still makes bind fail: that is SO_REUSEPORT's job).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK_HOST, self.requested_port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return Failure(
                    f"port {self.requested_port} on {LOOPBACK_HOST} is in use",
                    ErrorCode.INVALID_PARAMS,
                    "stop the program that holds it, or pick another port: `chctl auth NAME --port P`",
                )
            return Failure(
                f"cannot listen on {LOOPBACK_HOST}:{self.requested_port} ({type(exc).__name__})",
                ErrorCode.NETWORK,
            )
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        self._verdict = loop.create_future()
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        # access_log=None: aiohttp's access log would print the request line, code and state included.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        log.info("callback_listening", port=self.port)
        return Success(self.redirect_uri)

    def deliver(self, query: Mapping[str, str]) -> bool:
        """Hand in a response from elsewhere (a pasted URL). False if one was already taken."""
        if self._result is None or self._result.done() or not self._is_ours(query):
            return False
        self._result.set_result(dict(query))
        log.info("callback_received", source="paste")
        return True

    async def wait(self, timeout_s: float) -> Result[dict[str, str]]:
        """The first response's query parameters, or TIMEOUT."""
        if self._result is None:
            return Failure("the callback listener is not running", ErrorCode.INTERNAL)
        try:
            return Success(await asyncio.wait_for(asyncio.shield(self._result), timeout_s))
        except TimeoutError:
            log.info("callback_timed_out", timeout_s=timeout_s)
            return Failure(
                f"no authorization response within {timeout_s:g} s",
                ErrorCode.TIMEOUT,
                "run `chctl auth` again (use --timeout to wait longer)",
            )

    def finish(self, title: str, message: str) -> None:
        """What the browser that delivered the response should read, once the flow knows the outcome."""
        if self._verdict is not None and not self._verdict.done():
            self._verdict.set_result((title, message))

    async def close(self) -> None:
        # A browser still waiting for the verdict gets a neutral page now, not after a shutdown timeout.
        self.finish("Login ended", "Return to the terminal to see the result. You can close this tab.")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._result is not None and not self._result.done():
            self._result.cancel()

    async def __aenter__(self) -> CallbackServer:
        started = await self.start()
        if isinstance(started, Failure):
            raise CallbackServerError(started)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        query = {k: v for k, v in request.query.items()}
        if "code" not in query and "error" not in query:
            return self._page(400, "Not an authorization response", "This address only accepts login redirects.")
        if not self._is_ours(query):
            log.warning("callback_state_mismatch")
            return self._page(400, "Not this login's answer", "This response does not belong to the login in progress.")
        if self._result is None or self._result.done():
            log.info("callback_repeated")
            return self._page(409, "Link already used", "This login link was already used. Return to the terminal.")
        self._result.set_result(query)
        log.info("callback_received", source="browser", error=query.get("error"))
        # Hold the browser until the flow has checked the response and redeemed the code, so the
        # page tells the truth; fall back to a neutral page if the flow never says.
        title, message = describe_response(query)
        if self._verdict is not None:
            try:
                title, message = await asyncio.wait_for(asyncio.shield(self._verdict), VERDICT_WAIT_S)
            except TimeoutError:
                pass
        return self._page(200, title, message)

    def _is_ours(self, query: Mapping[str, str]) -> bool:
        return self.expected_state is None or states_match(query.get("state"), self.expected_state)

    @staticmethod
    def _page(status: int, title: str, message: str) -> web.Response:
        return web.Response(status=status, text=page(title, message), content_type="text/html", headers=PAGE_HEADERS)
