"""The RPC handlers for logins and tokens: auth.start/wait/paste/cancel/status/logout/import, token.refresh and
token.get."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from context_harness.daemon.rpc_machine_methods import obtain_now
from context_harness.daemon.rpc_methods import modes_changed, off_the_loop
from context_harness.daemon.rpc_params import (
    AuthStartParams,
    FlowParams,
    ImportParams,
    NameParams,
    PasteParams,
    TokenParams,
)
from context_harness.daemon.rpc_server import CALLER_PID
from context_harness.daemon.services import Services
from context_harness.primitives.oauth import LoginKind
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import auth_guidance
from context_harness.services.oauth_service import AuthOptions


async def auth_start(s: Services, p: AuthStartParams) -> Result[dict[str, str]]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    credential = s.tokens.load(p.name)
    if credential is not None and credential.login is not LoginKind.BROWSER:
        return await obtain_now(s, p, credential)
    if p.private_key is not None:
        return Failure(
            f"{p.name} logs in in the browser: --private-key is for a server added with --client-credentials",
            ErrorCode.INVALID_PARAMS,
            f"`chctl add {p.name} --url URL --client-credentials --client-id ID --private-key FILE` sets one up",
        )
    options = AuthOptions(
        client_id=p.client_id,
        client_secret=p.client_secret if p.client_id else None,
        scopes=p.scopes,
        port=p.port,
        timeout_s=p.timeout_s,
        token_auth_method=p.token_auth_method,
    )
    return await s.carrier.start_login(p.name, options)


async def auth_wait(s: Services, p: FlowParams) -> Result[dict[str, Any]]:
    waited = await s.carrier.wait_login(p.flow_id)
    if isinstance(waited, Failure):
        return waited
    row = waited.value
    if "made_private" in row or "configs" not in row:
        return waited  # the laptop's answer says its own; an identity provider's sign-in writes no config
    return Success({**row, "made_private": modes_changed(s.config.take_narrowed(list(row["configs"])))})


async def auth_paste(s: Services, p: PasteParams) -> Result[bool]:
    return s.flows.paste(p.flow_id, p.redirect_url)


async def auth_cancel(s: Services, p: FlowParams) -> Result[bool]:
    return s.flows.cancel(p.flow_id)


async def auth_status(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    found = await off_the_loop(s, "auth.status", lambda: s.status.lookup(p.name))
    if isinstance(found, Failure):
        return found
    row = found.value.as_dict()
    await s.carrier.fill_in([row])  # a remote machine's server: its state is the laptop's
    return Success(row)


async def auth_logout(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    return await s.oauth.logout(p.name)


async def token_refresh(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    known = s.mcp.known(p.name) is not None or s.bindings.for_server(p.name)
    if known and s.tokens.load(p.name) is None:
        return auth_guidance.refresh_without_login(p.name)
    # Shielded: a client that hangs up must not cancel a refresh between rotation and save.
    refreshed = await asyncio.shield(s.oauth.refresh_tokens(p.name))
    if isinstance(refreshed, Failure):
        return refreshed
    return Success(s.status.server(p.name, expects_login=True).as_dict())


async def token_get(s: Services, p: TokenParams) -> Result[dict[str, Any]]:
    if (unknown := s.carrier.unknown(p.name)) is not None:
        return unknown
    found = await s.token_access.valid_credential(p.name, p.min_valid_s, CALLER_PID.get(), for_url=p.for_url)
    if isinstance(found, Failure):
        return found
    valid = found.value
    return Success(
        {
            "name": valid.name,
            "token": valid.secret,
            "header_name": valid.header_name,
            "header_value": valid.header_value,
            "expires_at": valid.expires_at,
            "scopes_wanted": list(valid.scopes_wanted),
        }
    )


async def auth_import(s: Services, p: ImportParams) -> Result[dict[str, Any]]:
    return await s.imports.import_logins(p.source, Path(p.path), p.target(), dry_run=p.dry_run)
