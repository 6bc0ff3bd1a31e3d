"""Logout's revocation at the authorization server (RFC 7009): what was revoked, and what stays valid. The client
authenticates as at the token endpoint: with its secret, or with a signed assertion (`private_key_jwt`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog

from context_harness.oauth.machine_grants import PRIVATE_KEY_JWT, revoke_signed
from context_harness.oauth.token_client import revoke_token
from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import Failure, Result
from context_harness.services.machine_logins import machine_client

log = structlog.get_logger(__name__)


async def revoke_all(session: aiohttp.ClientSession, credential: Credential, timeout_s: float) -> list[dict[str, Any]]:
    """Revoke each token (refresh token first: it revokes the grant). Per token: whether the server
    revoked it, and if not, why and until when it stays valid (null: unknown or not at all)."""
    tokens = credential.tokens
    if tokens is None:
        return []
    outcomes: list[dict[str, Any]] = []
    for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
        if not token:
            continue
        valid_until = tokens.expires_at if hint == "access_token" else None
        reason: str | None = None
        if not credential.revocation_endpoint:
            reason = "the authorization server has no revocation endpoint"
        elif not credential.client_id:
            reason = "no client id is stored to revoke with"
        else:
            result = await _revoke(session, credential, credential.revocation_endpoint, token, hint, timeout_s)
            if isinstance(result, Failure):
                reason = result.error
            elif not result.value:
                reason = "the server does not revoke this kind of token"
        if reason is not None:
            log.warning("token_not_revoked", server=credential.name, token_kind=hint, reason=reason)
        outcomes.append(
            {
                "token": hint,
                "revoked": reason is None,
                "reason": reason,
                "valid_until": valid_until if reason is not None else None,
            }
        )
    return outcomes


async def _revoke(
    session: aiohttp.ClientSession, credential: Credential, endpoint: str, token: str, hint: str, timeout_s: float
) -> Result[bool]:
    if (
        credential.token_endpoint_auth_method == PRIVATE_KEY_JWT
        and credential.private_key
        and credential.token_endpoint
    ):
        return await revoke_signed(session, machine_client(credential), endpoint, token, hint, timeout_s)
    assert credential.client_id is not None
    return await revoke_token(
        session,
        endpoint,
        token=token,
        token_type_hint=hint,
        client_id=credential.client_id,
        client_secret=credential.client_secret,
        auth_method=credential.token_endpoint_auth_method,
        timeout_s=timeout_s,
    )
