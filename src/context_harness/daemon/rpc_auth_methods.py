"""RPC methods for logins and tokens: auth.start/wait/paste/cancel/status/logout and token.refresh."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import Field

from context_harness.daemon.rpc_methods import Params
from context_harness.daemon.rpc_server import Method
from context_harness.primitives.names import ServerName
from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services.oauth_service import AuthOptions

if TYPE_CHECKING:
    from context_harness.daemon.app import Daemon


class AuthStartParams(Params):
    name: ServerName
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str] | None = None
    port: int = Field(default=0, ge=0, le=65535)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)


class FlowParams(Params):
    flow_id: str


class PasteParams(FlowParams):
    redirect_url: str


class NameParams(Params):
    name: ServerName


def credential_summary(daemon: Daemon, credential: Credential) -> dict[str, Any]:
    tokens = credential.tokens
    return {
        "name": credential.name,
        "state": daemon.oauth.state_of(credential).value,
        "expires_at": tokens.expires_at if tokens else None,
        "scopes": tokens.scope.split() if tokens and tokens.scope else credential.scopes,
        "issuer": credential.issuer,
        "has_refresh_token": bool(tokens and tokens.refresh_token),
        "configs": [b.path for b in daemon.bindings.for_server(credential.name)],
        "config_errors": daemon.mcp.publish_errors.get(credential.name, {}),
        "next_refresh_at": daemon.next_refresh_at(credential.name),
    }


def auth_methods(daemon: Daemon) -> dict[str, Method]:
    async def start(p: AuthStartParams) -> Result[dict[str, str]]:
        options = AuthOptions(
            client_id=p.client_id, client_secret=p.client_secret, scopes=p.scopes, port=p.port, timeout_s=p.timeout_s
        )
        return await daemon.flows.start(p.name, options)

    async def wait(p: FlowParams) -> Result[dict[str, Any]]:
        done = await daemon.flows.wait(p.flow_id)
        return done if isinstance(done, Failure) else Success(credential_summary(daemon, done.value))

    async def paste(p: PasteParams) -> Result[bool]:
        return daemon.flows.paste(p.flow_id, p.redirect_url)

    async def cancel(p: FlowParams) -> Result[bool]:
        return daemon.flows.cancel(p.flow_id)

    async def status(p: NameParams) -> Result[dict[str, Any]]:
        found = daemon.oauth.get_status(p.name)
        if isinstance(found, Failure):
            return found
        return Success({**found.value, "next_refresh_at": daemon.next_refresh_at(p.name)})

    async def logout(p: NameParams) -> Result[dict[str, Any]]:
        return await daemon.oauth.logout(p.name)

    async def refresh(p: NameParams) -> Result[dict[str, Any]]:
        # Shielded: a client that hangs up must not cancel a refresh between rotation and save.
        refreshed = await asyncio.shield(daemon.oauth.refresh_tokens(p.name))
        if isinstance(refreshed, Failure):
            return refreshed
        daemon.on_credential_changed(p.name)
        return Success(credential_summary(daemon, refreshed.value))

    return {
        "auth.start": Method(AuthStartParams, start),
        "auth.wait": Method(FlowParams, wait),
        "auth.paste": Method(PasteParams, paste),
        "auth.cancel": Method(FlowParams, cancel),
        "auth.status": Method(NameParams, status),
        "auth.logout": Method(NameParams, logout),
        "token.refresh": Method(NameParams, refresh),
    }
