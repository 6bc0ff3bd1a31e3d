"""RPC methods for logins and tokens: auth.start/wait/paste/cancel/status/logout and token.refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from context_harness.daemon.rpc_methods import Params, TargetParams
from context_harness.daemon.rpc_server import Method
from context_harness.primitives.names import ServerName
from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services import auth_guidance
from context_harness.services.oauth_service import AuthOptions

if TYPE_CHECKING:
    from context_harness.daemon.app import Daemon


class AuthStartParams(Params):
    name: ServerName
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str] | None = None
    token_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    port: int = Field(default=0, ge=0, le=65535)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)


class FlowParams(Params):
    flow_id: str


class PasteParams(FlowParams):
    redirect_url: str


class NameParams(Params):
    name: ServerName


class ImportParams(TargetParams):
    client: Literal["opencode"] = "opencode"  # the adopted logins are written into opencode entries
    source: Literal["opencode", "mcp-remote"]
    path: str  # opencode's mcp-auth.json, or mcp-remote's config dir (~/.mcp-auth)
    dry_run: bool = False


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
        "config_errors": daemon.publisher.errors.get(credential.name, {}),
        "next_refresh_at": daemon.next_refresh_at(credential.name),
    }


def auth_methods(daemon: Daemon) -> dict[str, Method]:
    async def start(p: AuthStartParams) -> Result[dict[str, str]]:
        config_url = await daemon.oauth.server_url_off_loop(p.name)
        refused = auth_guidance.no_login_needed(
            p.name,
            daemon.tokens.load(p.name),
            daemon.mcp.registry.get(p.name),
            config_url.value if isinstance(config_url, Success) else None,
        )
        if refused is not None:
            return refused
        options = AuthOptions(
            client_id=p.client_id,
            client_secret=p.client_secret,
            scopes=p.scopes,
            port=p.port,
            timeout_s=p.timeout_s,
            token_auth_method=p.token_auth_method,
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
        found = await daemon.oauth.get_status_off_loop(p.name)
        if isinstance(found, Failure):
            return found
        return Success({**found.value, "next_refresh_at": daemon.next_refresh_at(p.name)})

    async def logout(p: NameParams) -> Result[dict[str, Any]]:
        return await daemon.oauth.logout(p.name)

    async def refresh(p: NameParams) -> Result[dict[str, Any]]:
        known = daemon.mcp.registry.get(p.name) is not None or daemon.bindings.for_server(p.name)
        if known and daemon.tokens.load(p.name) is None:
            return auth_guidance.refresh_without_login(p.name)
        # Shielded: a client that hangs up must not cancel a refresh between rotation and save.
        refreshed = await asyncio.shield(daemon.oauth.refresh_tokens(p.name))
        if isinstance(refreshed, Failure):
            return refreshed
        daemon.on_credential_changed(p.name)
        return Success(credential_summary(daemon, refreshed.value))

    async def import_logins(p: ImportParams) -> Result[dict[str, Any]]:
        return await daemon.imports.import_logins(p.source, Path(p.path), p.target(), p.dry_run)

    return {
        "auth.import": Method(ImportParams, import_logins),
        "auth.start": Method(AuthStartParams, start),
        "auth.wait": Method(FlowParams, wait),
        "auth.paste": Method(PasteParams, paste),
        "auth.cancel": Method(FlowParams, cancel),
        "auth.status": Method(NameParams, status),
        "auth.logout": Method(NameParams, logout),
        "token.refresh": Method(NameParams, refresh),
    }
