"""A local MCP registry: our own aiohttp server, shaped as the registry repository documents API v0.1
(`docs/reference/api/openapi.yaml`: `ServerList`, `ServerResponse`, the official `_meta`) and its entries as
server.json (schema 2025-12-11, `docs/reference/server-json/examples/valid/with-remote.json`):

    GET /v0.1/servers?search=&limit=&cursor=&version=latest&include_deleted=
        {"servers": [{"server": {...}, "_meta": {"io.modelcontextprotocol.registry/official": {...}}}],
         "metadata": {"nextCursor": "...", "count": N}}          (no nextCursor on the last page)
    GET /v0.1/servers/{url-encoded name}/versions
    GET /v0.1/servers/{url-encoded name}/versions/{version | latest}[?include_deleted=true]
        404 {"error": "Server not found"}

As the official registry does: `limit` defaults to 30 and may be 1-100 (else 422), `search` is a substring of
the name, `version=latest` keeps the latest versions, deleted servers are left out unless `include_deleted`.
It runs in the test's event loop (`serving(registry)`); `requests` records every path and query it was asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.oauth_fakes import serve

OFFICIAL = "io.modelcontextprotocol.registry/official"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
DEFAULT_LIMIT = 30
MAX_LIMIT = 100


def server_json(name: str, description: str, *, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    """A server.json as a publisher writes it (remotes=[...], packages=[...], title=... as keyword fields)."""
    return {"$schema": SCHEMA, "name": name, "description": description, "version": version, **fields}


def remote(
    url: str, *, transport: str = "streamable-http", headers: list[dict[str, Any]] | None = None, **more: Any
) -> dict[str, Any]:
    """A `remotes[]` item: {"type", "url", "headers": [KeyValueInput], "variables": {name: Input}}."""
    item: dict[str, Any] = {"type": transport, "url": url, **more}
    if headers:
        item["headers"] = headers
    return item


@dataclass
class Published:
    """One server version as the registry holds it, with the registry's own metadata."""

    server: dict[str, Any]
    status: str = "active"
    status_message: str | None = None
    is_latest: bool = True
    published_at: str = "2025-11-03T10:30:00Z"
    updated_at: str = "2025-12-01T08:00:00Z"

    def response(self) -> dict[str, Any]:
        official: dict[str, Any] = {
            "status": self.status,
            "publishedAt": self.published_at,
            "updatedAt": self.updated_at,
            "isLatest": self.is_latest,
        }
        if self.status_message is not None:
            official["statusMessage"] = self.status_message
            official["statusChangedAt"] = self.updated_at
        return {"server": self.server, "_meta": {OFFICIAL: official}}


@dataclass
class LocalRegistry:
    published: list[Published] = field(default_factory=list)
    down: bool = False  # answer 503 to everything (the registry's "no uptime guarantee")
    requests: list[str] = field(default_factory=list)
    base: str = ""

    def publish(self, server: dict[str, Any], **meta: Any) -> Published:
        entry = Published(server, **meta)
        self.published.append(entry)
        return entry

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v0.1/servers", self._list)
        app.router.add_get("/v0.1/servers/{name:.+}/versions/{version}", self._version)
        app.router.add_get("/v0.1/servers/{name:.+}/versions", self._versions)
        app.middlewares.append(self._record)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(str(request.rel_url))
        if self.down:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        response: web.StreamResponse = await handler(request)
        return response

    def _visible(self, include_deleted: bool) -> list[Published]:
        entries = [p for p in self.published if include_deleted or p.status != "deleted"]
        return sorted(entries, key=lambda p: (p.server["name"], p.server["version"]))

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return web.json_response({"title": "Unprocessable Entity", "status": 422}, status=422)
        entries = self._visible(query.get("include_deleted") == "true")
        search = query.get("search", "").lower()
        entries = [p for p in entries if search in p.server["name"].lower()]
        if query.get("version") == "latest":
            entries = [p for p in entries if p.is_latest]
        cursor = query.get("cursor")
        if cursor:  # opaque to clients: here, the name and version of the previous page's last entry
            entries = [p for p in entries if f"{p.server['name']}:{p.server['version']}" > cursor]
        page = entries[:limit]
        metadata: dict[str, Any] = {"count": len(page)}
        if len(entries) > limit:
            metadata["nextCursor"] = f"{page[-1].server['name']}:{page[-1].server['version']}"
        return web.json_response({"servers": [p.response() for p in page], "metadata": metadata})

    def _of(self, request: web.Request) -> list[Published]:
        name = request.match_info["name"]
        include_deleted = request.query.get("include_deleted") == "true"
        return [p for p in self._visible(include_deleted) if p.server["name"] == name]

    async def _version(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        for entry in self._of(request):
            if entry.server["version"] == version or (version == "latest" and entry.is_latest):
                return web.json_response(entry.response())
        return web.json_response({"error": "Server not found"}, status=404)

    async def _versions(self, request: web.Request) -> web.Response:
        found = self._of(request)
        if not found:
            return web.json_response({"error": "Server not found"}, status=404)
        return web.json_response({"servers": [p.response() for p in found], "metadata": {"count": len(found)}})


@contextlib.asynccontextmanager
async def serving(registry: LocalRegistry) -> AsyncIterator[LocalRegistry]:
    """`registry` on 127.0.0.1 (port 0) for the duration; its `base` is set to its URL."""
    async with serve(registry.app()) as base:
        registry.base = base
        yield registry
