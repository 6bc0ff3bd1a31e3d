"""Which daemon carries a server: this one, or — on a remote machine — the laptop's, through the socket forwarded
from it (`CH_DELEGATE_SOCKET`, `delegate.py`).

The one place that asks "is this server the laptop's?" (`Delegate.via`: a delegate socket is set, no credential
is stored here and no entry here reaches the server directly). The RPC handlers open a bridge, start and wait for
a login, fill in a status and check a name through the `Carrier`, the same whether this daemon carries the
server or hands it on; a status row says which (`via`).

How a request reaches a server: `chctl bridge NAME` sends `bridge.open` to this daemon, and `open_bridge` makes
the relay that carries the connection from then on. Here, that is a `Relay` whose upstream session sends each
message with the current credential (`bridge.py`, `upstream/session.py`). On a remote machine, for a server the
laptop carries, it is a `DelegatedRelay` that pipes the lines to the laptop's `remote.sock`; there the remote
handlers (`daemon/rpc_remote_methods.py`: shared servers only) hand the request to the laptop's own `Carrier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from context_harness.primitives.idp import IdpLogin
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.idp_service import IdpService, idp_row
from context_harness.services.oauth_service import AuthOptions
from context_harness.services.refresh_outcomes import env_prefix
from context_harness.services.server_names import ServerNames
from context_harness.services.status import StatusBoard
from context_harness.workers.auth_flows import AuthFlows
from context_harness.workers.bridge import Bridges, Relay
from context_harness.workers.delegate import Delegate, DelegatedRelay


class Carrier:
    def __init__(
        self,
        delegate: Delegate,
        names: ServerNames,
        bridges: Bridges,
        flows: AuthFlows,
        status: StatusBoard,
        idps: IdpService,  # a login may be a sign-in at an identity provider (`chctl idp login`): its row is theirs
    ) -> None:
        self.delegate = delegate
        self.names = names
        self.bridges = bridges
        self.flows = flows
        self.status = status
        self.idps = idps

    def configure(self, delegate_socket: Path | None) -> None:
        """New settings (a reload): the delegate socket may have been set, changed or unset."""
        self.delegate.path = delegate_socket

    def unknown(self, name: str) -> Failure | None:
        """Why `name` is no server of ours (NOT_FOUND, with the closest names); None when it is one. On a remote
        machine a name without a credential here is the laptop's to judge."""
        if self.delegate.via(name) is not None:
            return None
        return self.names.unknown(name)

    def entry_via(
        self, name: str, *, url: str | None, command: list[str] | None, registry_name: str | None
    ) -> str | None:
        """The socket a new entry for `name` (`chctl add`) is bridged through: on a remote machine, a server
        named alone (no URL, no command, no MCP registry's entry) that has no credential here is the laptop's
        to carry."""
        if url is not None or command is not None or registry_name is not None:
            return None
        path = self.delegate.path
        if path is None or self.delegate.tokens.path(name).exists():
            return None
        return str(path)

    async def open_bridge(
        self, name: str, replay: list[dict[str, Any]], *, remote: bool = False
    ) -> Result[Relay | DelegatedRelay]:
        """A relay for `name`'s bridge (see `Bridges.open`), or one piping it to the laptop."""
        if self.delegate.via(name) is None:
            opened: Result[Relay] | Result[DelegatedRelay] = await self.bridges.open(name, replay, remote=remote)
        else:
            opened = await self.delegate.open_bridge(self.bridges.new_id(), name, replay)
        return opened if isinstance(opened, Failure) else Success(opened.value)

    async def start_login(self, name: str, options: AuthOptions, *, join: bool = False) -> Result[dict[str, str]]:
        """`auth.start`: a login to `name` here (`AuthFlows.start`), or on the laptop, whose token stays there."""
        if self.delegate.via(name) is None:
            return await self.flows.start(name, options, join=join)
        if options.client_id or options.client_secret or options.scopes or options.token_auth_method or options.port:
            return Failure(
                f"{name} logs in on the laptop, with the laptop's client, scopes and callback port",
                ErrorCode.INVALID_PARAMS,
                f"run `chctl auth {name}` here without --client-id, --scope and --port (and with no "
                f"{env_prefix(name)}_CLIENT_ID set), or on the laptop with them",
            )
        started = await self.delegate.call("auth.start", {"name": name})  # the laptop takes nothing else
        if isinstance(started, Success):
            self.delegate.flows.add(started.value["flow_id"])
        return started

    async def wait_login(self, flow_id: str) -> Result[dict[str, Any]]:
        """`auth.wait`: the server's status row once its login ended; for a login on the laptop, with the
        laptop's word on its state."""
        if flow_id in self.delegate.flows:
            waited = await self.delegate.call("auth.wait", {"flow_id": flow_id}, wait_s=None)
            self.delegate.flows.discard(flow_id)
            if isinstance(waited, Failure):
                return waited
            here = self.status.server(waited.value["name"], expects_login=True).as_dict()
            return Success({**here, **waited.value})
        done = await self.flows.wait(flow_id)
        if isinstance(done, Failure):
            return done
        if isinstance(done.value, IdpLogin):  # `chctl idp login`: the waiting servers got their tokens meanwhile
            return Success(idp_row(self.idps, done.value.name))
        return Success(self.status.server(done.value.name, expects_login=True).as_dict())

    async def fill_in(self, rows: list[dict[str, Any]]) -> None:
        """Status rows of servers the laptop carries (`via`) get the laptop's state and expiry."""
        if any(row["via"] for row in rows):
            await self.delegate.fill_in(rows)
