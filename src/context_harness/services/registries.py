"""The MCP registries in `CH_REGISTRY_URL`, asked by the daemon: `chctl search` (the curated list and every
registry, each registry's pages followed up to a cap) and one server's entry for `chctl add NAMESPACE/NAME`.

Every answer is cached with a time to live (`CH_REGISTRY_CACHE_TTL_S`): a second search is answered from memory,
and when a registry cannot be reached its last answer is shown with its age. Requests go through the daemon's
network (`net.session`: proxies, CH_CA_BUNDLE); each is bounded (`registries.fetch`), a search's pages have one
deadline, at most MAX_CONCURRENT_REQUESTS run at once, and two people asking the same thing share one request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import structlog

from context_harness.primitives.mcp import MCPServer, ServerType
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import printable
from context_harness.registries import api, fetch
from context_harness.registries.resolve import KnownAt, auth_label, transport_label
from context_harness.stores.registry_cache import MEMORY_ITEMS, RegistryCache

log = structlog.get_logger(__name__)

# Pages followed per registry and search: 500 servers. A search that matches more is narrowed by its text.
MAX_PAGES = 5
# All the pages of one registry for one search; a page has REQUEST_TIMEOUT_S of its own.
SEARCH_DEADLINE_S = 30.0
# Registry requests in flight at once, every registry and search together: a hung registry holds a few
# connections and buffers (at most 4 x fetch.MAX_RESPONSE_BYTES), never the daemon.
MAX_CONCURRENT_REQUESTS = 4
DEFAULT_CACHE_TTL_S = 3600.0  # the registry changes by the day; an hour-old list is fresh enough
CURATED = "chctl"  # the registry column of the curated list's rows
REGISTRY_URL_HINT = (
    f"set CH_REGISTRY_URL (environment or daemon.env) to https:// base URLs, comma-separated: {api.OFFICIAL_REGISTRY}"
)


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """`CH_REGISTRY_URL` read (`Settings.registries()`), and the cache's time to live."""

    urls: tuple[str, ...] = (api.OFFICIAL_REGISTRY,)
    problems: tuple[str, ...] = ()  # entries of CH_REGISTRY_URL left out, and why
    cache_ttl_s: float = DEFAULT_CACHE_TTL_S


@dataclass(frozen=True, slots=True)
class Answer:
    """What one registry said to one question: now, or from the cache (then `error` says why not now)."""

    registry: str
    data: Any | None
    fetched_at: float | None = None
    from_cache: bool = False
    error: Failure | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """A server's entry for `chctl add`, and where it came from."""

    entry: api.Entry
    registry: str
    fetched_at: float
    from_cache: bool
    stale_because: Failure | None  # the registry could not be asked now: this is its last answer


class Registries:
    def __init__(
        self,
        settings: RegistrySettings,
        cache: RegistryCache,
        http: Callable[[], aiohttp.ClientSession],
        curated: Callable[[], Iterable[MCPServer]],
        known_at: KnownAt,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.http = http
        self.curated = curated
        self.known_at = known_at
        self.clock = clock
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._in_flight: dict[str, asyncio.Future[Result[Any]]] = {}
        self._shown: dict[int, tuple[Any, list[dict[str, Any]]]] = {}  # an answer's rows, by the answer's identity

    def configure(self, settings: RegistrySettings) -> None:
        self.settings = settings

    # --- chctl search -----------------------------------------------------------------------------------

    async def search(self, text: str) -> dict[str, Any]:
        """The curated servers and every registry's whose name (or, curated, description) holds `text`."""
        answers = await asyncio.gather(*(self._search_one(base, text) for base in self.settings.urls))
        rows = self._curated_rows(text)
        for answer in answers:
            rows += self._rows(answer)
        return {
            "servers": rows,
            "registries": [self._about(answer) for answer in answers],
            "warnings": list(self.settings.problems),
        }

    async def _search_one(self, base: str, text: str) -> Answer:
        return await self._answer(f"search {base} {text.casefold()}", base, lambda: self._pages(base, text))

    async def _pages(self, base: str, text: str) -> Result[dict[str, Any]]:
        """Every page for `text` up to MAX_PAGES (a cursor seen before ends it too), within the deadline."""
        entries: dict[str, api.Entry] = {}
        skipped = 0
        cursor: str | None = None
        seen: set[str] = set()
        stopped: str | None = None  # why there may be more than was read
        try:
            async with asyncio.timeout(SEARCH_DEADLINE_S):
                for _ in range(MAX_PAGES):
                    body = await self._get(api.list_url(base, text, cursor))
                    page = body if isinstance(body, Failure) else api.parse_page(body.value)
                    if isinstance(page, str):
                        page = Failure(f"the registry {fetch.host_of(base)} sent {page}", ErrorCode.NETWORK)
                    if isinstance(page, Failure):
                        if not entries:
                            return page
                        stopped = page.error
                        break
                    entries.update((entry.server.name, entry) for entry in page.entries)
                    skipped += len(page.skipped)
                    cursor = page.next_cursor
                    if cursor is None or cursor in seen:
                        break
                    seen.add(cursor)
                else:
                    stopped = f"more than {MAX_PAGES} pages: narrow the search"
        except TimeoutError:
            if not entries:
                return Failure(
                    f"the registry {fetch.host_of(base)} did not answer within {SEARCH_DEADLINE_S:g} s",
                    ErrorCode.TIMEOUT,
                    "try again later",
                )
            stopped = f"the rest did not come within {SEARCH_DEADLINE_S:g} s"
        dumped = [entry.model_dump(mode="json") for entry in entries.values()]
        return Success({"entries": dumped, "skipped": skipped, "stopped": stopped})

    def _rows(self, answer: Answer) -> list[dict[str, Any]]:
        """The rows an answer makes; made once per answer (a warm search then costs no parsing at all)."""
        if not isinstance(answer.data, dict):
            return []
        shown = self._shown.get(id(answer.data))
        if shown is not None and shown[0] is answer.data:
            return shown[1]
        rows = []
        for raw in answer.data.get("entries") or []:
            entry = api.parse_entry(raw)  # the cache is read as a registry is
            if isinstance(entry, api.Entry):
                rows.append(self._row(entry, answer.registry))
        self._shown[id(answer.data)] = (answer.data, rows)
        while len(self._shown) > MEMORY_ITEMS:
            self._shown.pop(next(iter(self._shown)))
        return rows

    def _row(self, entry: api.Entry, registry: str) -> dict[str, Any]:
        server = entry.server
        return {
            "name": server.name,
            "description": server.description,
            "title": server.title,
            "version": server.version,
            "transport": transport_label(server),
            "auth": auth_label(server, self.known_at),
            "status": entry.official.status,
            "registry": fetch.host_of(registry),
        }

    def _curated_rows(self, text: str) -> list[dict[str, Any]]:
        wanted = text.casefold()
        return [
            {
                "name": server.name,
                "description": server.description,
                "title": None,
                "version": None,
                "transport": _curated_transport(server),
                "auth": _curated_auth(server),
                "status": "active",
                "registry": CURATED,
            }
            for server in self.curated()
            if wanted in server.name.casefold() or wanted in server.description.casefold()
        ]

    def _about(self, answer: Answer) -> dict[str, Any]:
        data = answer.data if isinstance(answer.data, dict) else {}
        now = self.clock()
        return {
            "url": answer.registry,
            "host": fetch.host_of(answer.registry),
            "servers": len(data.get("entries") or []),
            "fetched_at": answer.fetched_at,
            "age_s": round(now - answer.fetched_at, 1) if answer.fetched_at is not None else None,
            "from_cache": answer.from_cache,
            "error": answer.error.error if answer.error is not None else None,
            "skipped": data.get("skipped", 0),
            "stopped": data.get("stopped"),
        }

    # --- chctl add NAMESPACE/NAME ------------------------------------------------------------------------

    async def entry(self, name: str, version: str = "latest") -> Result[Found]:
        """`name`'s entry (`version`, or the latest) from the first registry that has it."""
        errors: list[Failure] = []
        for base in self.settings.urls:
            key = f"version {base} {name} {version}"
            answer = await self._answer(key, base, partial(self._version, base, name, version))
            if answer.data is None:
                errors.append(answer.error or Failure("no answer", ErrorCode.NETWORK))
                continue
            entry = api.parse_entry(answer.data)
            if isinstance(entry, str):  # a cache file changed by hand: read as a registry's answer is
                errors.append(Failure(f"the cached entry for {name} cannot be read", ErrorCode.NETWORK))
                continue
            fetched_at = answer.fetched_at if answer.fetched_at is not None else self.clock()
            return Success(Found(entry, base, fetched_at, answer.from_cache, answer.error))
        return _not_found(name, version, self.settings.urls, errors)

    async def _version(self, base: str, name: str, version: str) -> Result[Any]:
        body = await self._get(api.version_url(base, name, version))
        if isinstance(body, Failure):
            return body
        entry = api.parse_entry(body.value)
        host = fetch.host_of(base)
        if isinstance(entry, str):
            return Failure(f"the registry {host}'s entry for {name} cannot be read: {entry}", ErrorCode.NETWORK)
        if entry.server.name.casefold() != name.casefold():
            return Failure(f"the registry {host} answered for {name} with another server", ErrorCode.NETWORK)
        return Success(entry.model_dump(mode="json"))

    # --- the cache and the requests ------------------------------------------------------------------------

    async def _answer(self, key: str, base: str, ask: Callable[[], Awaitable[Result[Any]]]) -> Answer:
        """The cached answer while it is fresh; else a new one (cached); else the stale one, saying why."""
        cached = self.cache.get(key)
        if cached is not None and self.clock() - cached.fetched_at < self.settings.cache_ttl_s:
            return Answer(base, cached.data, cached.fetched_at, from_cache=True)
        result = await self._once(key, ask)
        if isinstance(result, Success):
            now = self.clock()
            self.cache.put(key, result.value, now)
            return Answer(base, result.value, now)
        log.info("registry_unanswered", registry=fetch.host_of(base), code=result.code.value, error=result.error)
        if cached is None or result.code is ErrorCode.NOT_FOUND:
            return Answer(base, None, error=result)
        return Answer(base, cached.data, cached.fetched_at, from_cache=True, error=result)

    async def _once(self, key: str, ask: Callable[[], Awaitable[Result[Any]]]) -> Result[Any]:
        """One request for `key` however many wait for it; a waiter that goes away leaves it to the others."""
        future = self._in_flight.get(key)
        if future is None:
            future = asyncio.ensure_future(ask())
            self._in_flight[key] = future
            future.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(future)

    async def _get(self, url: str) -> Result[Any]:
        async with self._slots:
            return await fetch.get_json(self.http(), url)


def _not_found(name: str, version: str, urls: tuple[str, ...], errors: list[Failure]) -> Failure:
    unreachable = [error for error in errors if error.code is not ErrorCode.NOT_FOUND]
    if unreachable:
        return unreachable[0]
    what = name if version == "latest" else f"{name}@{version}"
    if not urls:
        message = f"{what} cannot be looked up: CH_REGISTRY_URL names no registry"
        return Failure(message, ErrorCode.NOT_FOUND, REGISTRY_URL_HINT)
    where = ", ".join(fetch.host_of(url) for url in urls)
    return Failure(f"{what} is not in {where}", ErrorCode.NOT_FOUND, "`chctl search TEXT` finds the exact name")


def _curated_transport(server: MCPServer) -> str:
    if server.server_type is ServerType.LOCAL:
        return "stdio"
    return "sse" if (server.url or "").rstrip("/").endswith("/sse") else "streamable-http"


def _curated_auth(server: MCPServer) -> str:
    if server.api_key_header:
        return f"key: {server.api_key_header}"
    return {"oauth": "OAuth", "none": "none"}.get(server.auth_type.value, printable(server.auth_type.value))
