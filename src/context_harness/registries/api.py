"""The MCP Registry API v0.1 as a client reads it: where to ask, and what an answer may hold.

Pure functions and models, no I/O. The shapes are the registry repository's `docs/reference/api/openapi.yaml`
(`ServerList`, `ServerResponse`, `ServerDetail`, `RemoteTransport`, `KeyValueInput`) and server.json
(schema 2025-12-11): a list answers `{"servers": [{"server": {...}, "_meta": {"io.modelcontextprotocol.registry/
official": {"status", "isLatest", ...}}}], "metadata": {"nextCursor", "count"}}`.

A registry is outside input. A model here bounds every list and string it keeps; what is only shown (a
description, a title, a version) is made printable and cut here, once; what is used (a URL, a header) is kept
as sent and judged where it is used (`resolve`). An entry that does not fit is skipped, never half-read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from context_harness.primitives.outside_values import is_secure_endpoint, url_problem
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable

OFFICIAL_REGISTRY = "https://registry.modelcontextprotocol.io"
API_VERSION_PATH = "/v0.1"
OFFICIAL_META = "io.modelcontextprotocol.registry/official"

# The official registry's largest page (its `limit` maximum): the fewest requests per search.
PAGE_LIMIT = 100
# More registries than a person lists by hand: each search asks every one of them.
MAX_REGISTRIES = 8
# server.json's own bounds on a name: reverse-DNS namespace, one slash, at most 200 characters.
SERVER_NAME = re.compile(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+")
MAX_SERVER_NAME = 200
# What one entry may hold. Real entries have one or two remotes with a few headers; these are generous and
# keep a hostile entry from costing more than a few hundred KiB once parsed.
MAX_REMOTES = 16  # more are not read (the first streamable-http or sse one is what counts)
MAX_PACKAGES = 16  # only named when a server has no remote
MAX_HEADERS = 32
MAX_VARIABLES = 32
MAX_CHOICES = 64
MAX_URL = 2048
MAX_VALUE = 4096  # a header value, default or choice
MAX_CURSOR = 1024

Transport = Literal["streamable-http", "sse"]
Status = Literal["active", "deprecated", "deleted"]


def _shown(limit: int) -> BeforeValidator:
    """Text that is only shown: any value becomes printable text of at most `limit` characters."""
    return BeforeValidator(lambda value: printable(value, limit) if isinstance(value, str) else "")


def _first(limit: int) -> BeforeValidator:
    """A list of which only the first `limit` items are read."""
    return BeforeValidator(lambda value: value[:limit] if isinstance(value, list) else value)


ShownText = Annotated[str, _shown(SERVER_TEXT_LIMIT)]
Value = Annotated[str, Field(max_length=MAX_VALUE)]


class Wire(BaseModel):
    """camelCase on the wire, unknown fields ignored (the API grows by adding), frozen once read."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Input(Wire):
    """`Input`: a value the user may have to give (a URL variable, a header)."""

    description: ShownText = ""
    is_required: bool = False
    is_secret: bool = False
    value: Value | None = None  # fixed by the publisher; may hold `{variables}`
    default: Value | None = None
    choices: list[Value] = Field(default_factory=list, max_length=MAX_CHOICES)
    placeholder: ShownText | None = None


class Header(Input):
    """`KeyValueInput` in a remote's `headers`."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    variables: dict[str, Input] = Field(default_factory=dict, max_length=MAX_VARIABLES)


class Remote(Wire):
    """`RemoteTransport`: a URL (maybe a template) and what must go with it."""

    type: str  # streamable-http or sse; another one is not ours to speak (skipped by `resolve`)
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL)]
    headers: list[Header] = Field(default_factory=list, max_length=MAX_HEADERS)
    variables: dict[str, Input] = Field(default_factory=dict, max_length=MAX_VARIABLES)


class Package(Wire):
    """A `Package`: named only, to say why a server without a remote is not added."""

    registry_type: ShownText = ""
    identifier: ShownText = ""


class ServerDetail(Wire):
    """server.json as a registry serves it."""

    name: Annotated[str, Field(max_length=MAX_SERVER_NAME, pattern=rf"^{SERVER_NAME.pattern}$")]
    description: ShownText = ""
    title: ShownText | None = None
    version: Annotated[str, _shown(255)] = ""
    website_url: Annotated[str, _shown(MAX_URL)] | None = None
    remotes: Annotated[list[Remote], _first(MAX_REMOTES)] = Field(default_factory=list)
    packages: Annotated[list[Package], _first(MAX_PACKAGES)] = Field(default_factory=list)


class Official(Wire):
    """The registry's own `_meta` for an entry."""

    status: Status = "active"
    status_message: Annotated[str, _shown(500)] | None = None
    is_latest: bool = True
    published_at: Annotated[str, _shown(64)] | None = None
    updated_at: Annotated[str, _shown(64)] | None = None


class Entry(Wire):
    """`ServerResponse`: one server version and the registry's metadata about it."""

    server: ServerDetail
    official: Official = Field(default_factory=Official)

    @model_validator(mode="before")
    @classmethod
    def _official_from_meta(cls, data: Any) -> Any:
        if isinstance(data, dict) and "official" not in data:  # as served; the cache keeps `official` itself
            meta = data.get("_meta")
            official = meta.get(OFFICIAL_META) if isinstance(meta, dict) else None
            return {"server": data.get("server"), "official": official if isinstance(official, dict) else {}}
        return data


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, read."""

    entries: list[Entry]
    next_cursor: str | None
    skipped: list[str]  # why each entry that did not fit was left out (no values: they are a registry's)


# --- where to ask -------------------------------------------------------------------------------------------


def registry_bases(setting: str) -> tuple[list[str], list[str]]:
    """`CH_REGISTRY_URL` (comma-separated base URLs) as (bases, problems): each base without a trailing slash
    or `/v0.1`; one that is not https (or plain http to this machine) is left out with the reason, since what a
    registry says decides where a credential goes."""
    bases: list[str] = []
    problems: list[str] = []
    for item in (part.strip() for part in setting.split(",")):
        if not item:
            continue
        base = item.rstrip("/").removesuffix(API_VERSION_PATH)
        problem = base_problem(base)
        if problem is not None:
            problems.append(f"CH_REGISTRY_URL: {printable(item, SERVER_TEXT_LIMIT)} {problem}; left out")
        elif len(bases) >= MAX_REGISTRIES:
            problems.append(f"CH_REGISTRY_URL: more than {MAX_REGISTRIES} registries; the rest are left out")
            break
        elif base not in bases:
            bases.append(base)
    return bases, problems


def base_problem(base: str) -> str | None:
    """Why `base` cannot be a registry's base URL (the gate's URL rule, as if it carried a secret); None if it can."""
    if "?" in base or "#" in base:
        return "is not a plain http(s) URL (no query, no fragment)"
    problem = url_problem(base, {}, carries_secret=True)
    if problem is not None and is_secure_endpoint(base.replace("http://", "https://", 1)):
        return "is plain http to another machine: anyone on the way could choose the servers it lists"
    return problem


def list_url(base: str, search: str, cursor: str | None) -> str:
    """The list of the latest versions whose name holds `search`, one page (after `cursor`)."""
    query: dict[str, str] = {"search": search, "limit": str(PAGE_LIMIT), "version": "latest"}
    if cursor:
        query["cursor"] = cursor
    return f"{base}{API_VERSION_PATH}/servers?{urlencode(query)}"


def version_url(base: str, name: str, version: str) -> str:
    """One version of a server (`latest` for the latest), deleted ones too: they are refused with the reason."""
    path = f"{API_VERSION_PATH}/servers/{quote(name, safe='')}/versions/{quote(version, safe='')}"
    return f"{base}{path}?include_deleted=true"


# --- what came back -----------------------------------------------------------------------------------------


def parse_page(body: Any) -> Page | str:
    """A `ServerList` page, or why it is not one. Entries that do not fit are skipped with the reason; the
    latest version of each name is kept once."""
    if not isinstance(body, dict) or not isinstance(body.get("servers"), list):
        return 'not a server list (no "servers" array)'
    entries: dict[str, Entry] = {}
    skipped: list[str] = []
    for index, item in enumerate(body["servers"]):
        entry = parse_entry(item)
        if isinstance(entry, str):
            skipped.append(f"entry {index + 1}: {entry}")
        elif entry.server.name not in entries or entry.official.is_latest:
            entries[entry.server.name] = entry
    return Page(entries=list(entries.values()), next_cursor=_next_cursor(body.get("metadata")), skipped=skipped)


def parse_entry(item: Any) -> Entry | str:
    """One `ServerResponse`, or why it cannot be read (the field and pydantic's words, never the value)."""
    try:
        return Entry.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "entry"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first.get('msg', 'invalid')}{more}"


def _next_cursor(metadata: Any) -> str | None:
    if not isinstance(metadata, dict):
        return None
    # `nextCursor` as the API has it since 2025-09; `next_cursor` as older registries (and docs) wrote it.
    cursor = metadata.get("nextCursor", metadata.get("next_cursor"))
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        return None
    return cursor
