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
from context_harness.primitives.idp import IdpLogin
from context_harness.primitives.oauth import LoginKind
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import auth_guidance
from context_harness.services.idp_service import idp_row
from context_harness.services.oauth_service import AuthOptions
from context_harness.services.refresh_outcomes import env_prefix


async def auth_start(s: Services, p: AuthStartParams) -> Result[dict[str, str]]:
    delegate = s.delegate
    if delegate.via(p.name) is not None:  # the login runs on the laptop, and the token stays there
        if p.client_id or p.client_secret or p.scopes or p.token_auth_method or p.port:
            return Failure(
                f"{p.name} logs in on the laptop, with the laptop's client, scopes and callback port",
                ErrorCode.INVALID_PARAMS,
                f"run `chctl auth {p.name}` here without --client-id, --scope and --port (and with no "
                f"{env_prefix(p.name)}_CLIENT_ID set), or on the laptop with them",
            )
        started = await delegate.call("auth.start", {"name": p.name})  # the laptop takes nothing else
        if isinstance(started, Success):
            delegate.flows.add(started.value["flow_id"])
        return started
    if (unknown := s.unknown(p.name)) is not None:
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
    return await start_login(s, p.name, options)


async def start_login(s: Services, name: str, options: AuthOptions, *, join: bool = False) -> Result[dict[str, str]]:
    """Start a login to `name` in this daemon, unless it needs none; `join`: see `AuthFlows.start`."""
    config_url = await s.oauth.server_url_off_loop(name)
    refused = auth_guidance.no_login_needed(
        name, s.tokens.load(name), s.mcp.known(name), config_url.value if isinstance(config_url, Success) else None
    )
    if refused is not None:
        return refused
    return await s.flows.start(name, options, join=join)


async def auth_wait(s: Services, p: FlowParams) -> Result[dict[str, Any]]:
    if p.flow_id in s.delegate.flows:
        waited = await s.delegate.call("auth.wait", {"flow_id": p.flow_id}, wait_s=None)
        s.delegate.flows.discard(p.flow_id)
        if isinstance(waited, Failure):
            return waited
        here = s.status.server(waited.value["name"], expects_login=True).as_dict()
        return Success({**here, **waited.value})
    done = await s.flows.wait(p.flow_id)
    if isinstance(done, Failure):
        return done
    if isinstance(done.value, IdpLogin):  # `chctl idp login`: the waiting servers got their tokens meanwhile
        return Success(idp_row(s.idps, done.value.name))
    row = s.status.server(done.value.name, expects_login=True).as_dict()
    return Success({**row, "made_private": modes_changed(s.config.take_narrowed(list(row["configs"])))})


async def auth_paste(s: Services, p: PasteParams) -> Result[bool]:
    return s.flows.paste(p.flow_id, p.redirect_url)


async def auth_cancel(s: Services, p: FlowParams) -> Result[bool]:
    return s.flows.cancel(p.flow_id)


async def auth_status(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.unknown(p.name)) is not None:
        return unknown
    found = await off_the_loop(s, "auth.status", lambda: s.status.lookup(p.name))
    if isinstance(found, Failure):
        return found
    row = found.value.as_dict()
    if row["via"]:  # a remote machine's server: its state is the laptop's
        await s.delegate.fill_in([row])
    return Success(row)


async def auth_logout(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.unknown(p.name)) is not None:
        return unknown
    return await s.oauth.logout(p.name)


async def token_refresh(s: Services, p: NameParams) -> Result[dict[str, Any]]:
    if (unknown := s.unknown(p.name)) is not None:
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
    if (unknown := s.unknown(p.name)) is not None:
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
