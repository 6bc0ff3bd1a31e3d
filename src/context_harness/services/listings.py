"""What `chctl list`, `chctl clients` and `chctl status` show, put together from the stores and services: the
RPC handlers only pass these on."""

from __future__ import annotations

from typing import Any

from context_harness.config.format import CLIENTS, ConfigFormat, get_format
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services.blocking_io import run_config_io
from context_harness.services.config_service import ConfigService, ConfigTarget
from context_harness.services.mcp_service import MCPService
from context_harness.services.status import ServerStatus, StatusBoard
from context_harness.stores.bindings import BindingStore


def configured(mcp: MCPService, bindings: BindingStore, target: ConfigTarget, client: str) -> Result[dict[str, Any]]:
    """The servers in `client`'s config at `target`: each entry masked, what it reaches, and which we manage."""
    listed = mcp.list_configured(target, client)
    if isinstance(listed, Failure):
        return listed
    path, entries = listed.value
    fmt = get_format(client)
    bound = bindings.load()
    servers = {name: fmt.mask(entry) if isinstance(entry, dict) else entry for name, entry in entries.items()}
    summaries = {name: entry_summary(fmt, entry) for name, entry in entries.items() if isinstance(entry, dict)}
    managed = sorted(n for n, items in bound.items() if any(b.path == str(path.resolve()) for b in items))
    return Success(
        {"path": str(path), "client": client, "servers": servers, "summaries": summaries, "managed": managed}
    )


def entry_summary(fmt: ConfigFormat, entry: dict[str, Any]) -> dict[str, Any]:
    """What `chctl list` shows of an entry, whatever the client's shape: remote URL or local command."""
    url = fmt.entry_url(entry)
    return {"kind": "remote", "target": url} if url else {"kind": "local", "target": " ".join(fmt.entry_command(entry))}


def client_rows(config: ConfigService, bindings: BindingStore) -> list[dict[str, Any]]:
    """Every client we can write for: is it on this machine, its user file, and the servers it carries (each
    with the configs it is in, and whether the user file is one of them: a project's server is not in it)."""
    bound = bindings.load()
    rows = []
    for client in CLIENTS:
        fmt = get_format(client)
        user_file = fmt.global_path()
        user_path = str(user_file.resolve())
        servers: dict[str, dict[str, Any]] = {}
        for name, items in bound.items():
            for binding in items:
                if binding.client == client:
                    server = servers.setdefault(
                        name, {"managed": True, "mode": binding.mode, "paths": [], "in_user_config": False}
                    )
                    server["paths"].append(binding.path)
                    server["in_user_config"] |= binding.path == user_path
        entries = config.entries(user_file, fmt) if user_file.exists() else None
        for name in entries.value if isinstance(entries, Success) else {}:
            servers.setdefault(name, {"managed": False, "mode": None, "paths": [str(user_file)]})
            servers[name]["in_user_config"] = True
        rows.append(
            {
                "client": client,
                "label": fmt.label,
                "found": fmt.found(),
                "user_config": str(user_file),
                "user_config_error": entries.error if isinstance(entries, Failure) else None,
                "servers": dict(sorted(servers.items())),
            }
        )
    return rows


async def server_statuses(status: StatusBoard, mcp: MCPService, config_io_timeout_s: float) -> list[ServerStatus]:
    """Every server's status. Whether a server without a credential awaits a login is read from its configs,
    in a thread; a config that does not answer leaves its server out (shown as needing no login)."""
    pending = status.awaiting_login()
    expects_login: dict[str, bool] = {}
    if pending:
        found = await run_config_io(
            lambda: Success({n: mcp.expects_login(n) for n in pending}), config_io_timeout_s, "status"
        )
        expects_login = found.value if isinstance(found, Success) else {}
    return status.servers(expects_login)
