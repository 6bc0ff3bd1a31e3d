"""The RPC handlers for the daemon, configs, status and doctor: thin calls into the services. Each takes the
`Services` and its checked parameters; `rpc_table` names them. Documented in docs/protocol.md."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from context_harness import __version__
from context_harness.config.format import DEFAULT_CLIENT, get_format
from context_harness.daemon.rpc_machine_methods import machine_setup, set_up_after_add
from context_harness.daemon.rpc_params import (
    AddParams,
    BridgeOpenParams,
    CheckParams,
    DoctorParams,
    NameTargetParams,
    NoParams,
    RemoveParams,
    SecretsMigrateParams,
    TargetParams,
)
from context_harness.daemon.rpc_registry_methods import registry_add_request
from context_harness.daemon.services import Services
from context_harness.daemon.settings import setting_names
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services import doctor, listings
from context_harness.services.blocking_io import StillRunning, run_blocking, run_config_io
from context_harness.services.config_service import ConfigTarget
from context_harness.services.idp_service import idp_row
from context_harness.services.mcp_service import AddRequest, client_format
from context_harness.services.network_checks import network_checks
from context_harness.services.registries import REGISTRY_URL_HINT
from context_harness.services.status import NO_AUTH, ServerStatus

log = structlog.get_logger(__name__)

# Reading every bound config and asking `git` about each: a hung one must not keep doctor from answering.
DOCTOR_CONFIG_CHECKS_TIMEOUT_S = 20.0

T = TypeVar("T")


async def off_the_loop(s: Services, what: str, work: Callable[[], Result[T]]) -> Result[T]:
    return await run_config_io(work, s.settings.config_io_timeout_s, what)


# --- the daemon ------------------------------------------------------------------------------------------


async def daemon_status(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    return Success(daemon_summary(s))


async def shutdown(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    s.stop_requested.set()
    return Success({"stopping": True})


def daemon_summary(s: Services) -> dict[str, Any]:
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - s.started_monotonic, 3),
        "socket": str(s.settings.socket_path),
        "remote_socket": str(remote) if (remote := s.settings.remote_socket_path) else None,
        "home": str(s.settings.home),
        "secret_store": s.vault.summary(),  # CH_SECRET_STORE, the store in use, the keychain, a warning to repeat
    }


# --- the registry and the configs --------------------------------------------------------------------------


async def registry_list(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    servers = s.mcp.list_available()
    assert isinstance(servers, Success)
    return Success(
        {
            "servers": [server.model_dump(mode="json", exclude_none=True) for server in servers.value],
            "warnings": s.mcp.registry_warnings,
        }
    )


async def config_init(s: Services, p: TargetParams) -> Result[dict[str, Any]]:
    found = client_format(p.client)
    if isinstance(found, Failure):
        return found
    fmt = found.value
    created = await off_the_loop(s, "config.init", lambda: s.config.init(p.target(), fmt))
    if isinstance(created, Failure):
        return created
    path, is_new = created.value
    return Success({"path": str(path), "created": is_new})


async def mcp_list(s: Services, p: TargetParams) -> Result[dict[str, Any]]:
    return await off_the_loop(s, "mcp.list", lambda: listings.configured(s.mcp, s.bindings, p.target(), p.client))


async def mcp_add(s: Services, p: AddParams) -> Result[dict[str, Any]]:
    setup = machine_setup(p)  # checked before anything is written
    if isinstance(setup, Failure):
        return setup
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
        clients=p.named_clients(),
        delegated_via=s.carrier.entry_via(p.name, url=p.url, command=p.command, registry_name=p.registry_name),
        oauth=setup.value is not None,
    )
    registry: dict[str, Any] | None = None
    if p.registry_name is not None:  # `chctl add NAMESPACE/NAME`: the URL and headers are the registry's
        from_registry = await registry_add_request(s, p, request)
        if isinstance(from_registry, Failure):
            return from_registry
        request, registry = from_registry.value
    added = await s.mcp.add(request)
    if isinstance(added, Failure):
        return added
    outcome = added.value  # `MCPService.add` announced the change: the header is written, the plan follows
    first = get_format(outcome.written[0].client)
    login = await set_up_after_add(s, p.name, setup.value) if setup.value is not None else {}
    narrowed = s.config.take_narrowed([str(w.path) for w in outcome.written])
    return Success(
        {
            "name": outcome.name,
            "path": str(outcome.path),
            "entry": first.mask(outcome.entry),
            "auth_type": outcome.auth_type.value,
            "needs_auth": outcome.needs_auth and "login" not in login,
            "needs_key": outcome.needs_key,
            "configs": [
                {"client": w.client, "path": str(w.path), "mode": w.mode, "new": w.new} for w in outcome.written
            ],
            "changes": list(outcome.changes),
            "not_written": outcome.not_written,
            **login,
            "made_private": modes_changed(narrowed),
            "registry": registry,
        }
    )


def modes_changed(narrowed: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    """{path: ["644", "600"]}: configs that lost group and other access, as it is told once (docs/guide.md, Secrets)."""
    return {path: [f"{before:o}", f"{after:o}"] for path, (before, after) in narrowed.items()}


async def mcp_remove(s: Services, p: RemoveParams) -> Result[dict[str, Any]]:
    removed = await off_the_loop(s, "mcp.remove", lambda: s.mcp.remove(p.name, p.target(), p.client))
    await s.states.changed(p.name)  # no config left carrying it: its refresh stops
    if isinstance(removed, Failure):
        return removed
    left = len(s.bindings.for_server(p.name))
    stored = s.tokens.load(p.name)
    kind = None if stored is None else ("key" if stored.kind == "api_key" else "login")
    forgotten = None
    if p.forget and kind is not None and not left:
        forgotten = await forget(s, p.name, kind)
        if isinstance(forgotten, Failure):
            return forgotten
    return Success(
        {
            "removed": True,
            "name": p.name,
            "path": str(removed.value),
            "configs_left": left,  # other configs (of other clients, projects) still carrying it
            "stored": None if forgotten else kind,  # what stays stored: "key", "login" or None
            "forgotten": forgotten,
        }
    )


async def forget(s: Services, name: str, kind: str) -> Failure | str:
    """`chctl remove NAME --forget` once no config carries NAME: an API key is deleted, a login logged out of
    (revoked at the server where it can be, as `chctl auth NAME --logout` does)."""
    if kind == "login":
        logged_out = await s.oauth.logout(name)
        return logged_out if isinstance(logged_out, Failure) else kind
    await s.vault.delete(name)  # the keychain item too, where the key rests there
    change = s.states.get(name).stored()
    log.info("credential_forgotten", server=name, kind=kind)
    await s.states.announce(change)
    return kind


async def mcp_validate(s: Services, p: NameTargetParams) -> Result[dict[str, Any]]:
    valid = await off_the_loop(s, "mcp.validate", lambda: s.mcp.validate_config(p.name, p.target(), p.client))
    return valid if isinstance(valid, Failure) else Success({"valid": True})


async def clients_list(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    return await off_the_loop(
        s, "clients.list", lambda: Success({"clients": listings.client_rows(s.config, s.bindings)})
    )


# --- status and doctor ---------------------------------------------------------------------------------------


async def status(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    rows = [row.as_dict() for row in await server_statuses(s)]
    await s.carrier.fill_in(rows)
    idps = [idp_row(s.idps, name) for name in s.idps.store.names()]
    return Success({"daemon": daemon_summary(s), "servers": rows, "idps": idps})


async def check(s: Services, p: CheckParams) -> Result[dict[str, Any]]:
    names = p.names or sorted(s.bindings.load())
    probes = await s.checker.run(names, Path(p.cwd) if p.cwd else None, p.timeout_s)
    return Success({"servers": [probe.as_dict() for probe in probes]})


async def server_statuses(s: Services) -> list[ServerStatus]:
    return await listings.server_statuses(s.status, s.mcp, s.settings.config_io_timeout_s)


async def run_doctor(s: Services, p: DoctorParams) -> Result[dict[str, Any]]:
    checks = doctor.permission_checks(s.settings.home, s.tokens)
    extra: list[Path] = []
    if p.cwd:
        nearest = s.config.resolve(ConfigTarget(cwd=Path(p.cwd)), fmt=get_format(DEFAULT_CLIENT))
        if isinstance(nearest, Success):
            extra.append(nearest.value)
    statuses = await server_statuses(s)
    needing_none = {server.name for server in statuses if server.state == NO_AUTH}
    targets: dict[str, tuple[str, dict[str, str]]] = {}
    try:  # reads every bound config and runs `git`: in a thread, so a hung file or repository stalls only this
        config_checks, targets = await run_blocking(
            lambda: (
                doctor.config_checks(s.config, s.bindings, s.tokens, extra),
                doctor.probe_targets(s.config, s.bindings, needing_none),
            ),
            DOCTOR_CONFIG_CHECKS_TIMEOUT_S,
            name="doctor",
        )
        checks += config_checks
    except StillRunning:
        checks.append(
            doctor.Check(
                "configs",
                "warn",
                f"checking the bound configs took over {DOCTOR_CONFIG_CHECKS_TIMEOUT_S:g} s",
                "a config may be on a hung mount; see `chctl status`",
            )
        )
    probes = await asyncio.gather(
        *(s.checker.probe_server(name, doctor.PROBE_TIMEOUT_S, at=target) for name, target in targets.items())
    )
    answer_401 = {found.name for found in probes if found.outcome == "unauthorized"}
    idps = [idp_row(s.idps, name) for name in s.idps.store.names()]
    checks += doctor.secret_checks(s.vault.summary(), statuses, idps)
    checks += doctor.server_checks(statuses, answer_401=answer_401)
    checks += [doctor.Check("registry", "warn", w, "fix or remove the entry") for w in s.mcp.registry_warnings]
    registry_urls = s.registries.settings.problems
    checks += [doctor.Check("registries", "warn", w, REGISTRY_URL_HINT) for w in registry_urls]
    checks += network_checks(s.http.network, p.shell_network)
    checks += doctor.setting_checks(s.settings.sources(), setting_names())
    return Success({"checks": [c.as_dict() for c in checks]})


async def secrets_migrate(s: Services, p: SecretsMigrateParams) -> Result[dict[str, Any]]:
    servers = await s.oauth.migrate_secrets(p.to)
    return Success({"to": p.to, "setting": s.vault.settings.store, "servers": servers})


# --- the bridge (a stream method: see `RpcServer.streams`) ------------------------------------------------


async def bridge_open(s: Services, p: BridgeOpenParams) -> Result[Any]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    return await s.carrier.open_bridge(p.name, p.replay)
