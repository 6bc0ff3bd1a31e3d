"""The RPC methods: parameter models, and thin handlers that call the services. Documented in docs/protocol.md."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from context_harness import __version__
from context_harness.config.format import CLIENTS, DEFAULT_CLIENT, ConfigFormat, Mode, get_format
from context_harness.daemon.rpc_server import Method
from context_harness.primitives.mcp import MCPAuthType, SecretMode
from context_harness.primitives.names import ServerName
from context_harness.primitives.oauth import TokenState
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services import doctor
from context_harness.services.blocking_io import StillRunning, run_blocking, run_config_io
from context_harness.services.config_service import ConfigTarget
from context_harness.services.mcp_service import AddRequest, client_format
from context_harness.services.oauth_service import no_refresh_token_note
from context_harness.stores.bindings import Binding

if TYPE_CHECKING:
    from context_harness.daemon.app import Daemon


def _path_text(value: str) -> str:
    if "\0" in value:  # the OS refuses such a path; say so instead of failing deep inside a service
        raise ValueError("a path cannot contain a NUL character")
    return value


def _absolute_path_text(value: str) -> str:
    if not os.path.isabs(_path_text(value)):
        raise ValueError("must be an absolute path")
    return value


PathText = Annotated[str, AfterValidator(_path_text)]
AbsolutePathText = Annotated[str, AfterValidator(_absolute_path_text)]

# Reading every bound config and asking `git` about each: a hung one must not keep doctor from answering.
DOCTOR_CONFIG_CHECKS_TIMEOUT_S = 20.0


T = TypeVar("T")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NoParams(Params):
    pass


class TargetParams(Params):
    cwd: AbsolutePathText
    project: PathText | None = None
    global_: bool = Field(default=False, alias="global")
    client: str = DEFAULT_CLIENT

    def target(self) -> ConfigTarget:
        return ConfigTarget(
            cwd=Path(self.cwd), project=Path(self.project) if self.project else None, global_=self.global_
        )


class AddParams(TargetParams):
    name: ServerName
    url: str | None = None
    headers: dict[str, str] = {}
    api_key: str | None = None
    key_header: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    environment: dict[str, str] = {}
    secret_mode: SecretMode = SecretMode.INLINE
    bridge: bool = False
    mode: Mode | None = None
    clients: list[str] | None = Field(default=None, min_length=1)  # several at once; else `client`


class BridgeOpenParams(Params):
    name: str
    # After a daemon restart: the client's own `initialize` and `notifications/initialized`, to set up a new
    # upstream session without the client noticing.
    replay: list[dict[str, Any]] = Field(default_factory=list, max_length=2)


class NameTargetParams(TargetParams):
    name: ServerName


class DoctorParams(Params):
    cwd: AbsolutePathText | None = None


def entry_summary(fmt: ConfigFormat, entry: dict[str, Any]) -> dict[str, Any]:
    """What `chctl list` shows of an entry, whatever the client's shape: remote URL or local command."""
    url = fmt.entry_url(entry)
    return {"kind": "remote", "target": url} if url else {"kind": "local", "target": " ".join(fmt.entry_command(entry))}


def client_rows(daemon: Daemon) -> list[dict[str, Any]]:
    """Every client we can write for: is it on this machine, its user file, and the servers it carries."""
    bound = daemon.bindings.load()
    rows = []
    for client in CLIENTS:
        fmt = get_format(client)
        servers: dict[str, dict[str, Any]] = {}
        for name, items in bound.items():
            for binding in items:
                if binding.client == client:
                    servers.setdefault(name, {"managed": True, "mode": binding.mode, "paths": []})["paths"].append(
                        binding.path
                    )
        user_file = fmt.global_path()
        entries = daemon.config.entries(user_file, fmt) if user_file.exists() else None
        for name in entries.value if isinstance(entries, Success) else {}:
            servers.setdefault(name, {"managed": False, "mode": None, "paths": [str(user_file)]})
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


async def off_the_loop(daemon: Daemon, what: str, work: Callable[[], Result[T]]) -> Result[T]:
    return await run_config_io(work, daemon.settings.config_io_timeout_s, what)


def build_methods(daemon: Daemon) -> dict[str, Method]:
    mcp = daemon.mcp

    async def status_daemon(_: NoParams) -> Result[dict[str, Any]]:
        return Success(daemon_status(daemon))

    async def shutdown(_: NoParams) -> Result[dict[str, Any]]:
        daemon.request_stop()
        return Success({"stopping": True})

    async def registry_list(_: NoParams) -> Result[dict[str, Any]]:
        servers = mcp.list_available()
        assert isinstance(servers, Success)
        return Success(
            {
                "servers": [s.model_dump(mode="json", exclude_none=True) for s in servers.value],
                "warnings": mcp.registry_warnings,
            }
        )

    async def config_init(p: TargetParams) -> Result[dict[str, Any]]:
        found = client_format(p.client)
        if isinstance(found, Failure):
            return found
        fmt = found.value
        created = await off_the_loop(daemon, "config.init", lambda: daemon.config.init(p.target(), fmt))
        if isinstance(created, Failure):
            return created
        path, is_new = created.value
        return Success({"path": str(path), "created": is_new})

    async def mcp_list(p: TargetParams) -> Result[dict[str, Any]]:
        configured = await off_the_loop(daemon, "mcp.list", lambda: mcp.list_configured(p.target(), p.client))
        if isinstance(configured, Failure):
            return configured
        path, entries = configured.value
        fmt = get_format(p.client)
        bound = daemon.bindings.load()
        servers = {name: fmt.mask(entry) if isinstance(entry, dict) else entry for name, entry in entries.items()}
        summaries = {name: entry_summary(fmt, entry) for name, entry in entries.items() if isinstance(entry, dict)}
        managed = sorted(n for n, items in bound.items() if any(b.path == str(path.resolve()) for b in items))
        return Success(
            {"path": str(path), "client": p.client, "servers": servers, "summaries": summaries, "managed": managed}
        )

    async def mcp_add(p: AddParams) -> Result[dict[str, Any]]:
        request = AddRequest(
            name=p.name,
            target=p.target(),
            url=p.url,
            headers=p.headers,
            api_key=p.api_key,
            key_header=p.key_header,
            command=p.command,
            environment=p.environment,
            secret_mode=p.secret_mode,
            bridge=p.bridge,
            mode=p.mode,
            clients=tuple(p.clients or [p.client]),
        )
        added = await off_the_loop(daemon, "mcp.add", lambda: mcp.add(request))
        if isinstance(added, Failure):
            return added
        outcome = added.value
        daemon.on_credential_changed(outcome.name)
        first = get_format(outcome.written[0].client)
        return Success(
            {
                "name": outcome.name,
                "path": str(outcome.path),
                "entry": first.mask(outcome.entry),
                "auth_type": outcome.auth_type.value,
                "needs_auth": outcome.needs_auth,
                "configs": [{"client": w.client, "path": str(w.path), "mode": w.mode} for w in outcome.written],
            }
        )

    async def mcp_remove(p: NameTargetParams) -> Result[dict[str, Any]]:
        removed = await off_the_loop(daemon, "mcp.remove", lambda: mcp.remove(p.name, p.target(), p.client))
        daemon.on_credential_changed(p.name)  # no config left carrying it: its refresh stops
        if isinstance(removed, Failure):
            return removed
        return Success({"removed": True, "name": p.name, "path": str(removed.value)})

    async def clients_list(_: NoParams) -> Result[dict[str, Any]]:
        return await off_the_loop(daemon, "clients.list", lambda: Success({"clients": client_rows(daemon)}))

    async def mcp_validate(p: NameTargetParams) -> Result[dict[str, Any]]:
        valid = await off_the_loop(daemon, "mcp.validate", lambda: mcp.validate_config(p.name, p.target(), p.client))
        return valid if isinstance(valid, Failure) else Success({"valid": True})

    async def status(_: NoParams) -> Result[dict[str, Any]]:
        rows = server_statuses(daemon, await logins_expected(daemon))
        return Success({"daemon": daemon_status(daemon), "servers": rows})

    async def run_doctor(p: DoctorParams) -> Result[dict[str, Any]]:
        checks = doctor.permission_checks(daemon.settings.home, daemon.tokens)
        extra: list[Path] = []
        if p.cwd:
            nearest = daemon.config.resolve(ConfigTarget(cwd=Path(p.cwd)))
            if isinstance(nearest, Success):
                extra.append(nearest.value)
        try:  # reads every bound config and runs `git`: in a thread, so a hung file or repository stalls only this
            checks += await run_blocking(
                lambda: doctor.config_checks(daemon.config, daemon.bindings, daemon.tokens, extra),
                DOCTOR_CONFIG_CHECKS_TIMEOUT_S,
                name="doctor",
            )
        except StillRunning:
            checks.append(
                doctor.Check(
                    "configs",
                    "warn",
                    f"checking the bound configs took over {DOCTOR_CONFIG_CHECKS_TIMEOUT_S:g} s",
                    "a config may be on a hung mount; see `chctl status`",
                )
            )
        checks += await daemon.unauthenticated_server_checks()
        checks += doctor.server_checks(server_statuses(daemon, await logins_expected(daemon)))
        checks += [doctor.Check("registry", "warn", w, "fix or remove the entry") for w in mcp.registry_warnings]
        return Success({"checks": [c.as_dict() for c in checks]})

    methods = {
        "daemon.status": Method(NoParams, status_daemon),
        "daemon.shutdown": Method(NoParams, shutdown),
        "registry.list": Method(NoParams, registry_list),
        "config.init": Method(TargetParams, config_init),
        "mcp.list": Method(TargetParams, mcp_list),
        "mcp.add": Method(AddParams, mcp_add),
        "mcp.remove": Method(NameTargetParams, mcp_remove),
        "mcp.validate": Method(NameTargetParams, mcp_validate),
        "clients.list": Method(NoParams, clients_list),
        "status": Method(NoParams, status),
        "doctor": Method(DoctorParams, run_doctor),
    }
    methods.update(daemon.extra_methods())
    return methods


def stream_methods(daemon: Daemon) -> dict[str, Method]:
    """Methods that turn the connection into something else; see `RpcServer.streams`."""

    async def bridge_open(p: BridgeOpenParams) -> Result[Any]:
        return await daemon.bridges.open(p.name, p.replay)

    return {"bridge.open": Method(BridgeOpenParams, bridge_open)}


def daemon_status(daemon: Daemon) -> dict[str, Any]:
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - daemon.started_monotonic, 3),
        "socket": str(daemon.settings.socket_path),
        "home": str(daemon.settings.home),
    }


async def logins_expected(daemon: Daemon) -> dict[str, bool]:
    """For each bound server without a credential: does it await an OAuth login? Read from its configs, in a
    thread; a config that does not answer leaves its server out (shown as needing no login)."""
    pending = [n for n in daemon.bindings.load() if not daemon.tokens.path(n).exists()]
    if not pending:
        return {}
    found = await off_the_loop(daemon, "status", lambda: Success({n: daemon.mcp.expects_login(n) for n in pending}))
    return found.value if isinstance(found, Success) else {}


def server_statuses(daemon: Daemon, expects_login: dict[str, bool]) -> list[dict[str, Any]]:
    """Every server's row; `expects_login` (from `logins_expected`) for servers without a credential."""
    bindings = daemon.bindings.load()
    names = sorted(set(bindings) | set(daemon.tokens.names()))
    rows = []
    for name in names:
        credential = daemon.tokens.load(name)
        known = daemon.mcp.registry.get(name)
        if credential is not None:
            auth_type = MCPAuthType.API_KEY if credential.kind == "api_key" else MCPAuthType.OAUTH
            state: str = daemon.oauth.state_of(credential).value
        else:
            auth_type = MCPAuthType.OAUTH if expects_login.get(name, False) else MCPAuthType.NONE
            if known is not None and known.auth_type is MCPAuthType.API_KEY:
                auth_type = MCPAuthType.API_KEY
            state = TokenState.PENDING_AUTH.value if auth_type is MCPAuthType.OAUTH else "no_auth"
        tokens = credential.tokens if credential else None
        errors = daemon.publisher.errors.get(name, {})
        last_error = daemon.oauth.last_error_of(credential) if credential else None
        last_error = last_error or daemon.flows.failed_logins.get(name)
        if errors and last_error is None:
            last_error = "; ".join(errors.values())
        row_note = None
        if credential is not None and tokens is not None and not tokens.refresh_token and state != "needs_reauth":
            row_note = no_refresh_token_note(credential)
        rows.append(
            {
                "name": name,
                "auth_type": auth_type.value,
                "state": state,
                "expires_at": tokens.expires_at if tokens else None,
                "has_refresh_token": bool(tokens and tokens.refresh_token),
                "next_refresh_at": daemon.next_refresh_at(name),
                "configs": [b.path for b in bindings.get(name, [])],
                "mode": _mode(bindings.get(name, [])),
                "bridges": daemon.bridges.for_server(name),
                "last_error": last_error,
                "note": row_note,
            }
        )
    return rows


def _mode(bindings: list[Binding]) -> str | None:
    """`bridge`, `header`, `bridge+header` (some configs each way), or None when no config carries it."""
    modes = sorted({b.mode for b in bindings})
    return "+".join(modes) if modes else None
