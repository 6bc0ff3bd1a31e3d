"""The registry of MCP servers: the curated list we ship, merged with the user's own additions.

The curated list is `context_harness/registry.json`, packaged with the code. Users add or override
entries in `~/.context-harness/registry.json` (the daemon passes the path from its settings). That file
is either a JSON list of entries or an object with a `servers` list::

    {"servers": [
      {"name": "internal-docs", "url": "https://mcp.example.com/mcp",
       "auth_type": "api-key", "api_key_header": "X-Api-Key",
       "description": "Our internal docs search"},
      {"name": "files", "server_type": "local",
       "command": ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv"]}
    ]}

Each entry takes the fields of `MCPServer` (`name` is required; `server_type` defaults to "remote",
`auth_type` to "none"; `api_key_header: "Authorization"` means `Authorization: Bearer KEY`). An entry
whose name matches a curated one replaces it. An entry whose URL or key header could not be written safely
(a client's substitution syntax, a credential over plain http to another host, a header name that is not an
RFC 9110 token) is skipped with a warning. A user file is never fatal: a missing one is simply
empty, and a malformed one (bad JSON, or entries that do not validate) yields warnings that name the
file and the problem, while every valid entry still loads.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from context_harness.config.format import substitutions
from context_harness.primitives.mcp import MCPAuthType, MCPServer, ServerType
from context_harness.primitives.outside_values import header_name_problem, url_problem

BUILTIN_RESOURCE = "registry.json"

# difflib's ratio below which a name is not offered as a suggestion: 0.6 is difflib's own default and
# catches one or two typos in names of five letters or more ("contex7" -> "context7").
SUGGESTION_CUTOFF = 0.6


def builtin_servers() -> list[MCPServer]:
    """The curated servers packaged with context-harness, in file order.

    A broken packaged file is a bug in the release, so this raises rather than warns.
    """
    text = resources.files("context_harness").joinpath(BUILTIN_RESOURCE).read_text(encoding="utf-8")
    return [MCPServer.model_validate({**entry, "source": "builtin"}) for entry in json.loads(text)]


def load_registry(user_file: Path) -> tuple[dict[str, MCPServer], list[str]]:
    """Builtin servers merged with the user's file; returns (servers by name, warnings).

    User entries override builtin ones of the same name. Never raises for a bad user file.
    """
    servers = {server.name: server for server in builtin_servers()}
    user_servers, warnings = _read_user_file(user_file)
    for server in user_servers:
        servers[server.name] = server
    return servers, warnings


def close_names(name: str, names: Iterable[str], limit: int = 3) -> list[str]:
    """Up to `limit` known names that look like `name`, best first (case-insensitive)."""
    by_folded: dict[str, str] = {}
    for known in names:
        by_folded.setdefault(known.casefold(), known)
    wanted = name.casefold()
    matches = difflib.get_close_matches(wanted, list(by_folded), n=limit, cutoff=SUGGESTION_CUTOFF)
    # A fragment ("cloud") is also a fair guess at the names that contain it.
    if len(wanted) >= 3:
        for folded in sorted(by_folded):
            if len(matches) >= limit:
                break
            if wanted in folded and folded not in matches:
                matches.append(folded)
    return [by_folded[folded] for folded in matches]


def _read_user_file(path: Path) -> tuple[list[MCPServer], list[str]]:
    """The valid entries of the user's registry file, and a warning for each problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read the registry file ({type(exc).__name__}: {_os_reason(exc)})"]

    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]

    entries = document.get("servers") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        return [], [f'{path}: expected a JSON list of servers or {{"servers": [...]}}']

    servers: list[MCPServer] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        server = _parse_entry(entry)
        if isinstance(server, str):
            warnings.append(f"{path}: entry {index}{_entry_label(entry)} skipped: {server}")
            continue
        if server.name in seen:
            warnings.append(f"{path}: entry {index} ('{server.name}') repeats an earlier name; last one wins")
        seen.add(server.name)
        servers.append(server)
    return servers, warnings


def _parse_entry(entry: Any) -> MCPServer | str:
    """One user entry as a server, or the reason it cannot be one."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    try:
        server = MCPServer.model_validate({**entry, "source": "user"})
    except ValidationError as exc:
        return "; ".join(_describe_error(error) for error in exc.errors())
    return entry_problem(server) or server


def entry_problem(server: MCPServer) -> str | None:
    """What makes a schema-valid entry unusable (no url for a remote, no header for a key), if anything."""
    if not server.name.strip():
        return "field 'name': must not be empty"
    if server.server_type is ServerType.REMOTE and not server.url:
        return "field 'url': a remote server needs a url"
    if server.server_type is ServerType.LOCAL and not server.command:
        return "field 'command': a local server needs a command list"
    if server.auth_type is MCPAuthType.API_KEY and not server.api_key_header:
        return "field 'api_key_header': an api-key server needs the header that carries the key"
    # What we would write from it into a config passes the same gate as a login or `chctl add`.
    if server.url:
        bad_url = url_problem(server.url, substitutions(), carries_secret=server.auth_type is not MCPAuthType.NONE)
        if bad_url is not None:
            return f"field 'url': {bad_url}"
    if server.api_key_header and (bad_header := header_name_problem(server.api_key_header)) is not None:
        return f"field 'api_key_header': {bad_header}"
    return None


def _describe_error(error: Any) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "entry"
    # Pydantic's own message, never the input value: a user may have pasted a key into the wrong field.
    return f"field '{field}': {error.get('msg', 'invalid')}"


def _entry_label(entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f" ('{name}')" if isinstance(name, str) and name else ""


def _os_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
