"""What the restricted remote socket (`remote.sock`) answers, and only for the servers the user shared:
the daemon's version, a status without paths or tokens, `bridge.open` and a login by the server's name alone.
`rpc_table.REMOTE` names them; every other method is refused there. What is shared is set on `chd.sock`
(`rpc_share_methods.py`). What a remote machine sends on to `CH_DELEGATE_SOCKET` is `workers/carrier.py`'s to say."""

from __future__ import annotations

from typing import Any

from context_harness import __version__
from context_harness.daemon import rpc_auth_methods as auth
from context_harness.daemon import rpc_methods as m
from context_harness.daemon.rpc_params import (
    BridgeOpenParams,
    FlowParams,
    NoParams,
    RemoteAuthStartParams,
)
from context_harness.daemon.services import Services
from context_harness.primitives.oauth import LoginKind
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.oauth_service import AuthOptions

NOT_REMOTE = "not available remotely"


def not_shared(name: str) -> Failure:
    return Failure(
        f"{name} is {NOT_REMOTE}: it is not shared with other machines",
        ErrorCode.PERMISSION_DENIED,
        f"on the laptop, run `chctl share {name}`",
    )


async def daemon_status(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    return Success({"version": __version__})


async def status(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    shared = s.shared.load()
    rows = [
        {"name": row.name, "state": row.state, "expires_at": row.expires_at}
        for row in await m.server_statuses(s)
        if row.name in shared
    ]
    return Success({"daemon": {"version": __version__}, "servers": rows})


async def bridge_open(s: Services, p: BridgeOpenParams) -> Result[Any]:
    if not s.shared.is_shared(p.name):
        return not_shared(p.name)
    return await s.carrier.open_bridge(p.name, p.replay, remote=True)  # the remote bridges' budget and idle limit


async def auth_start(s: Services, p: RemoteAuthStartParams) -> Result[dict[str, str]]:
    """A login for another machine takes the server's name and nothing else: this machine's client, its scopes
    and a callback port it chooses. A login for that server already running is joined, not doubled."""
    if p.model_extra:
        return Failure(
            "from another machine, auth.start takes only the server's name",
            ErrorCode.INVALID_PARAMS,
            f"{p.name} logs in with the laptop's client and scopes; to choose them, run "
            f"`chctl auth {p.name} --client-id ID` on the laptop",
        )
    if not s.shared.is_shared(p.name):
        return not_shared(p.name)
    stored = s.tokens.load(p.name)
    if stored is not None and stored.login is not LoginKind.BROWSER:
        return Failure(
            f"{p.name} gets its tokens without a browser, on the laptop, by itself",
            ErrorCode.INVALID_PARAMS,
            f"if it says it needs a login, run `chctl auth {p.name}` (or what `chctl status` says) on the laptop",
        )
    started = await s.carrier.start_login(p.name, AuthOptions(), join=True)
    if isinstance(started, Success):
        s.remote_flows.add(started.value["flow_id"])
    return started


async def auth_wait(s: Services, p: FlowParams) -> Result[dict[str, Any]]:
    # Only a login started through this socket: a flow id seen elsewhere is no business of another machine.
    if p.flow_id not in s.remote_flows:
        return Failure("no such login in progress", ErrorCode.NOT_FOUND, "start one with `chctl auth NAME`")
    waited = await auth.auth_wait(s, p)
    s.remote_flows.discard(p.flow_id)
    if isinstance(waited, Failure):
        return waited
    row = waited.value
    return Success({key: row[key] for key in ("name", "state", "expires_at", "has_refresh_token")})
