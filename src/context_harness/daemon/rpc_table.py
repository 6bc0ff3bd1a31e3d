"""The one table of RPC methods: name → parameters and handler. docs/protocol.md documents each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from context_harness.daemon import rpc_auth_methods as auth
from context_harness.daemon import rpc_machine_methods as machine
from context_harness.daemon import rpc_methods as m
from context_harness.daemon import rpc_params as p
from context_harness.daemon import rpc_registry_methods as registries
from context_harness.daemon import rpc_remote_methods as remote
from context_harness.daemon import rpc_share_methods as share
from context_harness.daemon.rpc_server import Method
from context_harness.daemon.services import Services
from context_harness.primitives.result import Result

Handler = Callable[[Services, Any], Awaitable[Result[Any]]]

METHODS: dict[str, tuple[type[p.Params], Handler]] = {
    "daemon.status": (p.NoParams, m.daemon_status),
    "daemon.shutdown": (p.NoParams, m.shutdown),
    "registry.list": (p.NoParams, m.registry_list),
    "registry.search": (p.SearchParams, registries.registry_search),
    "registry.show": (p.RegistryShowParams, registries.registry_show),
    "config.init": (p.TargetParams, m.config_init),
    "mcp.list": (p.TargetParams, m.mcp_list),
    "mcp.add": (p.AddParams, m.mcp_add),
    "mcp.remove": (p.RemoveParams, m.mcp_remove),
    "mcp.validate": (p.NameTargetParams, m.mcp_validate),
    "clients.list": (p.NoParams, m.clients_list),
    "status": (p.NoParams, m.status),
    "doctor": (p.DoctorParams, m.run_doctor),
    "secrets.migrate": (p.SecretsMigrateParams, m.secrets_migrate),
    "check": (p.CheckParams, m.check),
    "auth.import": (p.ImportParams, auth.auth_import),
    "auth.start": (p.AuthStartParams, auth.auth_start),
    "auth.wait": (p.FlowParams, auth.auth_wait),
    "auth.paste": (p.PasteParams, auth.auth_paste),
    "auth.cancel": (p.FlowParams, auth.auth_cancel),
    "auth.status": (p.NameParams, auth.auth_status),
    "auth.logout": (p.NameParams, auth.auth_logout),
    "token.refresh": (p.NameParams, auth.token_refresh),
    "token.get": (p.TokenParams, auth.token_get),
    "idp.add": (p.IdpAddParams, machine.idp_add),
    "idp.login": (p.IdpLoginParams, machine.idp_login),
    "idp.list": (p.NoParams, machine.idp_list),
    "share.add": (p.ShareParams, share.share_add),
    "share.remove": (p.ShareParams, share.share_remove),
}

# Methods that turn the connection into something else; see `RpcServer.streams`.
STREAMS: dict[str, tuple[type[p.Params], Handler]] = {
    "bridge.open": (p.BridgeOpenParams, m.bridge_open),
}

# What the restricted remote socket answers, each its own handler (shared servers only, nothing about paths or
# tokens). Opt-in: a method not listed here, including any added to METHODS later, is refused there.
REMOTE: dict[str, tuple[type[p.Params], Handler]] = {
    "daemon.status": (p.NoParams, remote.daemon_status),
    "status": (p.NoParams, remote.status),
    "auth.start": (p.RemoteAuthStartParams, remote.auth_start),
    "auth.wait": (p.FlowParams, remote.auth_wait),
}
REMOTE_STREAMS: dict[str, tuple[type[p.Params], Handler]] = {
    "bridge.open": (p.BridgeOpenParams, remote.bridge_open),
}


def bind(table: dict[str, tuple[type[p.Params], Handler]], services: Services) -> dict[str, Method]:
    """The table's handlers, each given `services`: what `RpcServer` serves."""
    return {name: Method(params, partial(handler, services)) for name, (params, handler) in table.items()}
