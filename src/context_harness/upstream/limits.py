"""What a remote MCP server can make the daemon spend, bounded: bytes, connections, waits and retries.

A bridged server is input like any other: it may be broken or hostile. Whatever it does, it costs at most
one message's worth of memory, its own share of connections, and a re-initialization now and then; the
other servers and the daemon's RPCs never wait for it.

Concurrency: asyncio, as aiohttp's is (a body is read under `asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream.contract import RelayFailure

# MCP messages can be large (a tool returning a file): one message — a relay line, a JSON reply, an SSE
# event or line — may be this long, and nothing from a server is buffered beyond it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A message goes out (to the server, to the client) in slices of this size, each drained before the next: the
# transport copies what the socket does not take at once, and a message written whole would be held twice.
WRITE_SLICE_BYTES = 256 * 1024
# An HTTP error's body is only looked at for a JSON-RPC error: small.
MAX_ERROR_BODY_BYTES = 1024 * 1024
# A reply that has begun keeps coming: this long without a byte is a stalled server (the wait for the
# headers is not bounded: a server answering in JSON holds them until its tool is done).
BODY_IDLE_S = 60.0
# A response stream ends once its response has come (the server SHOULD close it then): a server gets this
# long to close it, so the connection is kept for the next request, and then it is closed for it.
ANSWERED_STREAM_GRACE_S = 1.0
# Requests that are not streams (the legacy transport's POSTs, which are answered at once with a 202).
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=BODY_IDLE_S)
# Connections to one bridged server (its host and port): 32 sessions each with a stream of their own and a
# call in flight use 64. The authorization servers have a pool of their own (oauth.http).
CONNECTIONS_PER_HOST = 128
# A lost session is initialized again at once, then after this delay (seconds, doubling with each loss
# within a minute, capped), and at most this often a minute: a server that loses every session is asked
# six times in its first 16 s, then once in a while (unbounded, it was hundreds of times a second).
REINIT_BACKOFF_S = (0.5, 30.0)
REINIT_PER_MINUTE = 6
# A stream the server closed is reconnected after the wait its `retry:` field asks for (SEP-1699), at most this
# long: the client's request waits meanwhile, and a server's `retry: 99999999999` must not hold it for ever.
MAX_RECONNECT_DELAY_S = 30.0


def reconnect_delay_s(retry_ms: int | None, default_s: float = 0.0) -> float:
    """Seconds to wait before reconnecting a stream the server closed: its `retry`, capped; else `default_s`."""
    return default_s if retry_ms is None else min(retry_ms / 1000, MAX_RECONNECT_DELAY_S)


class TooLarge(Exception):
    """A server sent more than one message may hold."""


async def read_body(response: aiohttp.ClientResponse, limit: int = MAX_MESSAGE_BYTES) -> bytearray:
    """The whole body, read as it comes: TooLarge past `limit` (before reading, when its length says so),
    TimeoutError when it stalls for BODY_IDLE_S."""
    if response.content_length is not None and response.content_length > limit:
        raise TooLarge
    body = bytearray()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as idle:
        while True:
            idle.reschedule(loop.time() + BODY_IDLE_S)
            chunk = await response.content.readany()
            if not chunk:
                return body
            if len(body) + len(chunk) > limit:
                raise TooLarge
            body += chunk


def too_large(name: str) -> Failure:
    limit = f"{MAX_MESSAGE_BYTES // (1024 * 1024)} MiB"
    return Failure(
        f"{name} sent a message larger than {limit}, more than the relay carries",
        ErrorCode.NETWORK,
        "ask for less at a time (a smaller page, range or file)",
    )


def not_redirected(name: str, response: aiohttp.ClientResponse) -> None:
    """RelayFailure for a 3xx: never followed, since the credential would go with it wherever it points."""
    if not 300 <= response.status < 400:
        return
    parts = urlsplit(response.headers.get("Location") or "")
    where = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path or "nowhere"
    raise RelayFailure(
        Failure(
            f"{name} answered HTTP {response.status} redirecting to {where}, which is not followed",
            ErrorCode.NETWORK,
            f"if the server moved, point chctl at its new URL: `chctl add {name} --url NEW_URL`",
        )
    )


def lost_too_often(name: str) -> Failure:
    return Failure(
        f"{name} lost its session {REINIT_PER_MINUTE} times within a minute",
        ErrorCode.NETWORK,
        "it keeps forgetting sessions (restarting?): try again in a minute",
    )


class ReinitBudget:
    """How soon a lost session may be initialized again, or None when it was lost too often this minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._recent: deque[float] = deque()  # when the re-initializations of the last minute began

    def delay(self) -> float | None:
        now = self.clock()
        while self._recent and now - self._recent[0] >= 60:
            self._recent.popleft()
        if len(self._recent) >= REINIT_PER_MINUTE:
            return None
        if not self._recent:
            return 0.0
        first, cap = REINIT_BACKOFF_S
        due = self._recent[-1] + min(first * 2.0 ** (len(self._recent) - 1), cap)
        return max(0.0, due - now)

    def spend(self) -> None:
        self._recent.append(self.clock())
