"""The RPC handlers for MCP registries: `registry.search`, `registry.show`, and the part of `mcp.add` that turns
`NAMESPACE/NAME[@VERSION]` into the server to add. Documented in docs/protocol.md."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from context_harness.config.format import substitutions
from context_harness.daemon.rpc_params import AddParams, RegistryShowParams, SearchParams
from context_harness.daemon.services import Services
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import printable
from context_harness.registries.api import Entry
from context_harness.registries.fetch import host_of
from context_harness.registries.resolve import (
    TEMPLATE_VARIABLE,
    Given,
    is_required,
    is_secret,
    pick_remote,
    resolve,
    transport_label,
)
from context_harness.services.mcp_service import AddRequest
from context_harness.services.registries import Found


async def registry_search(s: Services, p: SearchParams) -> Result[dict[str, Any]]:
    return Success(await s.registries.search(p.text))


async def registry_show(s: Services, p: RegistryShowParams) -> Result[dict[str, Any]]:
    """A server's entry as `chctl add` needs it to ask for values: its variables and headers."""
    found = await s.registries.entry(p.name, p.version)
    if isinstance(found, Failure):
        return found
    return Success({**_about(found.value), **_inputs(found.value.entry)})


async def registry_add_request(
    s: Services, p: AddParams, base: AddRequest
) -> Result[tuple[AddRequest, dict[str, Any]]]:
    """`base` with the URL, headers and key of `p.registry_name`'s remote, and what to tell about it."""
    assert p.registry_name is not None
    if p.url is not None or p.command is not None or p.key_header is not None:
        return Failure(
            f"{p.registry_name} comes from a registry: its URL and headers are the registry's",
            ErrorCode.INVALID_PARAMS,
            f"drop --url, --command and --key-header: `chctl add {p.registry_name}` (its `--var`, `--header` and "
            "`--header-env` fill in what it asks for)",
        )
    found = await s.registries.entry(p.registry_name, p.version or "latest")
    if isinstance(found, Failure):
        return found
    given = Given(variables=p.variables, secrets=p.secret_headers, api_key=p.api_key, headers=p.headers)
    resolved = resolve(found.value.entry, given, substitutions(), s.mcp.known_at)
    if isinstance(resolved, Failure):
        return resolved
    r = resolved.value
    request = replace(
        base,
        url=r.url,
        headers=r.headers,
        api_key=r.api_key,
        key_header=r.key_header,
        key_scheme=r.key_scheme,
        secret_headers=r.extra_secrets,
        auth_type=r.auth_type,
    )
    about = _about(found.value)
    about.update(transport=r.transport, may_need_login=r.may_need_login, notes=[*about["notes"], *r.notes])
    return Success((request, about))


def _about(found: Found) -> dict[str, Any]:
    entry = found.entry
    notes = []
    if found.stale_because is not None:
        age = age_words(time.time() - found.fetched_at)
        notes.append(f"{found.stale_because.error}: its answer from {age} ago (cached) was used")
    return {
        "name": entry.server.name,
        "version": entry.server.version,
        "description": entry.server.description,
        "status": entry.official.status,
        "status_message": entry.official.status_message,
        "registry": host_of(found.registry),
        "fetched_at": found.fetched_at,
        "from_cache": found.from_cache,
        "notes": notes,
    }


def _inputs(entry: Entry) -> dict[str, Any]:
    """The chosen remote's URL template, variables and headers, as text to show (a person types the values)."""
    remote = pick_remote(entry.server)
    if remote is None:
        return {"transport": transport_label(entry.server), "url": None, "variables": [], "headers": []}
    names = list(dict.fromkeys([*TEMPLATE_VARIABLE.findall(remote.url), *remote.variables]))
    variables = []
    for name in names:
        spec = remote.variables.get(name)
        default = (spec.value if spec.value is not None else spec.default) if spec is not None else None
        variables.append(
            {
                "name": printable(name, 60),
                "description": spec.description if spec is not None else "",
                "default": printable(default, 200) if default is not None else None,
                "choices": [printable(choice, 200) for choice in spec.choices] if spec is not None else [],
                "required": spec.is_required if spec is not None else True,
            }
        )
    headers = [
        {
            "name": printable(header.name, 60),
            "description": header.description,
            "secret": is_secret(header),
            "required": is_required(header),
            "default": None if is_secret(header) else printable(header.value or header.default or "", 200) or None,
        }
        for header in remote.headers
    ]
    return {"transport": remote.type, "url": printable(remote.url, 300), "variables": variables, "headers": headers}


def age_words(seconds: float) -> str:
    """A duration as a person says it: 40 s, 12 min, 3.5 h, 2.0 days."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
