"""The one kind of request the daemon makes to a registry: a GET of JSON, bounded in size and in time, with no
redirect followed. The session comes from `net.session` (proxies, CH_CA_BUNDLE), so a company network applies.

A registry that answers 1 GiB costs at most MAX_RESPONSE_BYTES of buffer before it is cut off; one that never
ends, or drips a byte a second, is cut off after REQUEST_TIMEOUT_S; neither holds anything else up (each request
is its own task, and `services.registries` lets only a few run at once).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from context_harness.net import failures
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import printable

MIB = 1024 * 1024
# A page of 100 entries from the official registry is 0.1 to 0.5 MiB; eight times the largest seen.
MAX_RESPONSE_BYTES = 4 * MIB
# The whole request, body included: a registry that drips its answer is cut off here, not only a silent one.
REQUEST_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 10.0
READ_CHUNK_BYTES = 64 * 1024


def host_of(url: str) -> str:
    """`host[:port]` of a registry URL: what messages name (the query is ours, the path says nothing more)."""
    return printable(urlsplit(url).netloc, 100)


async def get_json(session: aiohttp.ClientSession, url: str) -> Result[Any]:
    """The JSON at `url`; NOT_FOUND for a 404, NETWORK or TIMEOUT (naming the host) for anything else amiss."""
    host = host_of(url)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with session.get(
                url, allow_redirects=False, timeout=timeout, headers={"Accept": "application/json"}
            ) as response:
                refused = _status_problem(host, response)
                if refused is not None:
                    return refused
                body = await _bounded_body(host, response)
    except TimeoutError:
        return Failure(
            f"the registry {host} did not answer within {REQUEST_TIMEOUT_S:g} s",
            ErrorCode.TIMEOUT,
            "try again later; `chctl search` shows what the cache holds meanwhile",
        )
    except aiohttp.ClientError as exc:
        return failures.unreachable(f"the registry {host}", exc)
    if isinstance(body, Failure):
        return body
    try:
        return Success(json.loads(body))
    except (ValueError, RecursionError):
        return Failure(f"the registry {host} did not answer with JSON", ErrorCode.NETWORK, _CHECK_URL)


_CHECK_URL = "check CH_REGISTRY_URL: it names the registry's base URL (e.g. https://registry.modelcontextprotocol.io)"


def _status_problem(host: str, response: aiohttp.ClientResponse) -> Failure | None:
    status = response.status
    if status == 200:
        return None
    if status == 404:
        return Failure(f"the registry {host} has no such entry", ErrorCode.NOT_FOUND)
    if 300 <= status < 400:
        location = printable(response.headers.get("Location", "nowhere"), 200)
        return Failure(
            f"the registry {host} answered with a redirect to {location} (not followed)",
            ErrorCode.NETWORK,
            "if that is where the registry lives now, put it in CH_REGISTRY_URL",
        )
    return Failure(f"the registry {host} answered HTTP {status}", ErrorCode.NETWORK, "try again later")


async def _bounded_body(host: str, response: aiohttp.ClientResponse) -> bytes | Failure:
    too_large = Failure(
        f"the registry {host} answered more than {MAX_RESPONSE_BYTES // MIB} MiB (not read further)",
        ErrorCode.NETWORK,
        _CHECK_URL,
    )
    if (response.content_length or 0) > MAX_RESPONSE_BYTES:
        return too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            return too_large
    return bytes(body)
