"""OAuthService: the seed's OAuth operations — log in, refresh, hand out a valid token, log out.

It owns the order that keeps rotating refresh tokens safe: a new refresh token is saved to disk before
the new access token is published anywhere, and only one refresh per server runs at a time, across
processes too (an asyncio lock plus a lock file).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog

from context_harness.config.format import get_format
from context_harness.daemon.settings import Settings
from context_harness.oauth.flow import AuthorizationUrlHandler, run_authorization_flow
from context_harness.oauth.token_client import (
    PermanentError,
    Refreshed,
    TransientError,
    refresh_access_token,
    revoke_token,
)
from context_harness.primitives.mcp import MCPAuthType, MCPServer, SecretMode
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.mcp_service import MCPService
from context_harness.stores.client_store import ClientStore
from context_harness.stores.lock_file import LockTimeout, file_lock
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

# Another process holding the server's lock file longer than this is stuck, not busy.
LOCK_TIMEOUT_S = 60.0
# `ensure_valid_token` refreshes a token with less than this left, so a caller never gets one that dies in flight.
VALIDITY_MARGIN_S = 60.0


class TokenEvents(Protocol):
    """Where token events go: the notifier (people) and the event hook (scripts)."""

    def token_event(self, server: str, event: str, message: str) -> None: ...


class _NoEvents:
    def token_event(self, server: str, event: str, message: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class AuthOptions:
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scopes: list[str] | None = None
    port: int = 0
    timeout_s: float = 300.0


# --- the outcomes of one refresh attempt (what the refresher schedules on) ------------------------------


@dataclass(frozen=True, slots=True)
class RefreshDone:
    """New tokens are stored and published."""

    credential: Credential


@dataclass(frozen=True, slots=True)
class RefreshNotNeeded:
    """Someone else (another process, a concurrent call) refreshed it while we waited for the lock."""

    credential: Credential


@dataclass(frozen=True, slots=True)
class RefreshRetry:
    """A transient failure: keep the current token while it lasts, try again after a backoff."""

    reason: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RefreshNeedsReauth:
    """Only a person can fix this (invalid_grant, no refresh token, no credential): `chctl auth NAME`."""

    reason: str


RefreshAttempt = RefreshDone | RefreshNotNeeded | RefreshRetry | RefreshNeedsReauth


@dataclass(slots=True)
class Runtime:
    """What is true right now but not worth a disk write: refreshing, retrying, the last error."""

    state: TokenState | None = None
    last_error: str | None = None


class OAuthService:
    def __init__(
        self,
        settings: Settings,
        tokens: TokenStore,
        clients: ClientStore,
        mcp: MCPService,
        session: Callable[[], aiohttp.ClientSession],
        events: TokenEvents | None = None,
        on_new_credential: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.clients = clients
        self.mcp = mcp
        self._session = session
        self.events: TokenEvents = events or _NoEvents()
        self.on_new_credential = on_new_credential or (lambda _name: None)
        self.runtime: dict[str, Runtime] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- the seed's API --------------------------------------------------------------------------------

    def list_providers(self) -> Result[list[MCPServer]]:
        return Success(
            sorted((s for s in self.mcp.registry.values() if s.auth_type is MCPAuthType.OAUTH), key=lambda s: s.name)
        )

    def get_status(self, name: str) -> Result[dict[str, Any]]:
        credential = self.tokens.load(name)
        if credential is None:
            known = self.mcp.registry.get(name)
            if known is None and not self.mcp.bindings.for_server(name):
                unknown = self.mcp.get_server_info(name)  # NOT_FOUND with suggestions
                assert isinstance(unknown, Failure)
                return unknown
            return Success(
                {
                    "name": name,
                    "state": TokenState.PENDING_AUTH.value,
                    "usable": False,
                    "expires_at": None,
                    "scopes": None,
                    "issuer": None,
                    "has_refresh_token": False,
                }
            )
        state = self.state_of(credential)
        tokens = credential.tokens
        usable = (
            bool(credential.secret)
            and state not in (TokenState.NEEDS_REAUTH, TokenState.PENDING_AUTH)
            and not (tokens is not None and tokens.is_expired(buffer_seconds=0))
        )
        return Success(
            {
                "name": name,
                "state": state.value,
                "usable": usable,
                "expires_at": tokens.expires_at if tokens else None,
                "scopes": (tokens.scope.split() if tokens and tokens.scope else credential.scopes),
                "issuer": credential.issuer,
                "has_refresh_token": bool(tokens and tokens.refresh_token),
                "last_error": self.last_error_of(credential),
            }
        )

    async def authenticate(
        self,
        name: str,
        options: AuthOptions,
        on_authorization_url: AuthorizationUrlHandler,
        paste: asyncio.Queue[str] | None = None,
    ) -> Result[Credential]:
        server_url = self.server_url(name)
        if isinstance(server_url, Failure):
            return server_url
        client_id, client_secret = options.client_id, options.client_secret
        known = self.mcp.registry.get(name)
        if client_id is None and known is not None and known.client_id:
            client_id = known.client_id
        grant = await run_authorization_flow(
            self._session(),
            server_url=server_url.value,
            client_store=self.clients,
            server_name=name,
            on_authorization_url=on_authorization_url,
            client_id=client_id,
            client_secret=client_secret,
            scopes=options.scopes,
            port=options.port,
            timeout_s=options.timeout_s,
            paste=paste,
            http_timeout_s=self.settings.http_timeout_s,
            client_metadata_url=self.settings.client_metadata_url,
        )
        if isinstance(grant, Failure):
            if known is not None and known.needs_preregistered_client and grant.code is ErrorCode.AUTH_REQUIRED:
                return Failure(
                    grant.error,
                    grant.code,
                    f"{name} needs an OAuth app you register yourself; pass --client-id "
                    f"(or set {env_prefix(name)}_CLIENT_ID)" + (f", see {known.docs_url}" if known.docs_url else ""),
                )
            return grant
        g = grant.value
        credential = Credential(
            name=name,
            kind="oauth",
            state=TokenState.ACTIVE,
            tokens=g.tokens,
            issuer=g.issuer,
            token_endpoint=g.token_endpoint,
            revocation_endpoint=g.revocation_endpoint,
            client_id=g.client_id,
            client_secret=g.client_secret,
            token_endpoint_auth_method=g.token_endpoint_auth_method,
            resource=g.resource,
            scopes=g.scopes,
        )
        async with self._lock(name):
            self.tokens.save(credential)
            self.runtime[name] = Runtime()
            self._publish(name)
        log.info(
            "token_stored",
            server=name,
            expires_at=g.tokens.expires_at,
            has_refresh_token=g.tokens.refresh_token is not None,
        )
        self.events.token_event(name, "new", f"{name}: logged in")
        self.on_new_credential(name)
        return Success(credential)

    async def refresh_tokens(self, name: str) -> Result[Credential]:
        """Refresh now (`chctl refresh`), whatever the expiry."""
        credential = self.tokens.load(name)
        if credential is None:
            return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "see `chctl status`")
        if credential.kind != "oauth":
            return Failure(f"{name} uses an API key: there is nothing to refresh", ErrorCode.INVALID_PARAMS)
        attempt = await self.refresh_once(name, force=True)
        match attempt:
            case RefreshDone(credential) | RefreshNotNeeded(credential):
                return Success(credential)
            case RefreshRetry(reason, _):
                return Failure(
                    f"refresh of {name} failed for now: {reason}",
                    ErrorCode.NETWORK,
                    "the daemon keeps retrying in the background; see `chctl status`",
                )
            case RefreshNeedsReauth(reason):
                return Failure(
                    f"{name} needs a new login: {reason}", ErrorCode.INVALID_GRANT, f"run `chctl auth {name}`"
                )

    async def ensure_valid_token(self, name: str) -> Result[OAuthTokens]:
        """A token with at least a minute to live, refreshed first if need be. The proxy will await this."""
        credential = self.tokens.load(name)
        if credential is None or credential.tokens is None:
            return Failure(f"{name} has no OAuth token", ErrorCode.AUTH_REQUIRED, f"run `chctl auth {name}`")
        if not credential.tokens.is_expired(VALIDITY_MARGIN_S):
            return Success(credential.tokens)
        attempt = await self.refresh_once(name, force=False)
        match attempt:
            case RefreshDone(fresh) | RefreshNotNeeded(fresh) if fresh.tokens is not None:
                return Success(fresh.tokens)
            case RefreshNeedsReauth(reason):
                return Failure(f"{name}: {reason}", ErrorCode.TOKEN_EXPIRED, f"run `chctl auth {name}`")
        if not credential.tokens.is_expired(0):
            return Success(credential.tokens)
        return Failure(
            f"{name}'s token expired and the refresh failed",
            ErrorCode.TOKEN_EXPIRED,
            "the daemon keeps retrying; see `chctl status`",
        )

    async def get_bearer_token(self, name: str) -> Result[str]:
        tokens = await self.ensure_valid_token(name)
        return tokens if isinstance(tokens, Failure) else Success(tokens.value.access_token)

    async def logout(self, name: str) -> Result[dict[str, Any]]:
        """Revoke at the server (RFC 7009) when it has an endpoint, then forget the tokens and headers."""
        async with self._lock(name):
            credential = self.tokens.load(name)
            if credential is None:
                return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "nothing to log out of")
            revoked = await self._revoke(credential)
            self.tokens.delete(name)
            self.runtime.pop(name, None)
            self._forget_headers(name, credential.header_name)
        log.info("credential_forgotten", server=name, revoked=revoked)
        self.events.token_event(name, "revoked", f"{name}: logged out")
        self.on_new_credential(name)
        return Success({"name": name, "revoked": revoked})

    async def refresh_rejected(self, name: str, rejected: str | None) -> RefreshAttempt:
        """A server refused the access token `rejected` (a 401 to the bridge): refresh, unless someone
        already did — the same lock as the refresher's, so a rotating refresh token is never sent twice."""
        try:
            async with self._lock(name):
                credential = self.tokens.load(name)
                if credential is None or credential.kind != "oauth" or credential.tokens is None:
                    return RefreshNeedsReauth("no login is stored")
                if credential.tokens.access_token != rejected:
                    return RefreshNotNeeded(credential)
                if credential.state is TokenState.NEEDS_REAUTH:
                    return RefreshNeedsReauth(credential.last_error or "the last refresh was refused")
                return await self._refresh_locked(credential)
        except LockTimeout:
            return RefreshRetry("another process holds the refresh lock", None)

    # --- one refresh, safely -------------------------------------------------------------------------

    async def refresh_once(self, name: str, *, force: bool, due_before: float | None = None) -> RefreshAttempt:
        """Refresh `name` unless (`force` is off and) its stored token is no longer due by `due_before`."""
        planned = self.tokens.load(name)
        try:
            async with self._lock(name):
                credential = self.tokens.load(name)
                if credential is None or credential.kind != "oauth":
                    return RefreshNeedsReauth("no OAuth credential is stored")  # forgotten meanwhile: nothing to do
                if credential.tokens is None:
                    return self._needs_reauth(name, credential, "no OAuth token is stored")
                if (
                    not force
                    and planned is not None
                    and _changed(planned, credential)
                    and not _due(credential, due_before)
                ):
                    return RefreshNotNeeded(credential)
                return await self._refresh_locked(credential)
        except LockTimeout:
            return RefreshRetry("another process holds the refresh lock", None)

    async def _refresh_locked(self, credential: Credential) -> RefreshAttempt:
        name, tokens = credential.name, credential.tokens
        assert tokens is not None
        if not tokens.refresh_token or not credential.token_endpoint or not credential.client_id:
            if tokens.is_expired(0):
                return self._needs_reauth(name, credential, "the token expired and no refresh token was issued")
            # Nothing to refresh with: look again when it expires, then it needs a new login.
            left = (tokens.expires_at - time.time()) if tokens.expires_at is not None else None
            return RefreshRetry("no refresh token was issued; the token is used until it expires", left)
        self.runtime.setdefault(name, Runtime()).state = TokenState.REFRESHING
        outcome = await refresh_access_token(
            self._session(),
            credential.token_endpoint,
            tokens.refresh_token,
            credential.client_id,
            credential.client_secret,
            credential.resource,
            None,
            self.settings.http_timeout_s,
            credential.token_endpoint_auth_method,
        )
        match outcome:
            case Refreshed(new_tokens):
                if new_tokens.refresh_token is None:  # not rotated: keep using the one we have
                    new_tokens = new_tokens.model_copy(update={"refresh_token": tokens.refresh_token})
                fresh = credential.model_copy(
                    update={"tokens": new_tokens, "state": TokenState.ACTIVE, "last_error": None}
                )
                self.tokens.save(fresh)  # the rotated refresh token is on disk before anything uses the new token
                self.runtime[name] = Runtime()
                self._publish(name)
                log.info("token_refreshed", server=name, expires_at=new_tokens.expires_at)
                self.events.token_event(name, "refreshed", f"{name}: token refreshed")
                return RefreshDone(fresh)
            case TransientError(reason, retry_after):
                self.runtime[name] = Runtime(TokenState.RETRYING, reason)
                log.warning("token_refresh_failed_transient", server=name, reason=reason, retry_after=retry_after)
                self.events.token_event(name, "retrying", f"{name}: refresh failed, retrying ({reason})")
                return RefreshRetry(reason, retry_after)
            case PermanentError(_code, reason):
                return self._needs_reauth(name, credential, reason)

    def _needs_reauth(self, name: str, credential: Credential | None, reason: str) -> RefreshNeedsReauth:
        if credential is not None and credential.kind == "oauth":
            self.tokens.save(credential.model_copy(update={"state": TokenState.NEEDS_REAUTH, "last_error": reason}))
        self.runtime[name] = Runtime(TokenState.NEEDS_REAUTH, reason)
        log.warning("token_needs_reauth", server=name, reason=reason)
        self.events.token_event(name, "needs_reauth", f"{name} needs a new login: run `chctl auth {name}` ({reason})")
        return RefreshNeedsReauth(reason)

    # --- helpers -------------------------------------------------------------------------------------

    def state_of(self, credential: Credential) -> TokenState:
        live = self.runtime.get(credential.name)
        return live.state if live is not None and live.state is not None else credential.state

    def last_error_of(self, credential: Credential) -> str | None:
        live = self.runtime.get(credential.name)
        return live.last_error if live is not None and live.last_error else credential.last_error

    def server_url(self, name: str) -> Result[str]:
        """The URL an agent uses for `name` (a bound config's entry), else the registry's."""
        for binding in self.mcp.bindings.for_server(name):
            if binding.url:  # a bridged entry: the URL lives in the binding
                return Success(binding.url)
            fmt = get_format(binding.client)
            entries = self.mcp.config.entries(Path(binding.path), fmt)
            if isinstance(entries, Success):
                entry = entries.value.get(name)
                url = fmt.entry_url(entry) if isinstance(entry, dict) else None
                if url:
                    return Success(url)
        known = self.mcp.registry.get(name)
        if known is not None and known.url:
            return Success(known.url)
        if known is None:
            unknown = self.mcp.get_server_info(name)
            assert isinstance(unknown, Failure)
            return Failure(unknown.error, unknown.code, f"add it first: `chctl add {name} --url URL`")
        return Failure(f"{name} is not a remote server", ErrorCode.INVALID_PARAMS)

    @asynccontextmanager
    async def _lock(self, name: str) -> AsyncIterator[None]:
        """The in-process lock, then the lock file: one refresh per server, across processes too."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            async with file_lock(self.settings.locks_dir / f"{name}.lock", LOCK_TIMEOUT_S):
                yield

    def republish_failed(self) -> None:
        """Write the current header again into configs whose last write failed (fixed by hand, remounted)."""
        for name in list(self.mcp.publish_errors):
            self._publish(name)

    def _publish(self, name: str) -> None:
        published = self.mcp.update_auth(name)
        if isinstance(published, Success):
            self.mcp.record_publish(name, published.value)

    async def _revoke(self, credential: Credential) -> bool:
        tokens = credential.tokens
        if not credential.revocation_endpoint or tokens is None or not credential.client_id:
            return False
        revoked = False
        for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
            if not token:
                continue
            result = await revoke_token(
                self._session(),
                credential.revocation_endpoint,
                token,
                hint,
                credential.client_id,
                credential.client_secret,
                credential.token_endpoint_auth_method,
                self.settings.http_timeout_s,
            )
            if isinstance(result, Failure):
                log.warning("token_revocation_failed", server=credential.name, code=result.code.value)
            else:
                revoked = revoked or result.value
        return revoked

    def _forget_headers(self, name: str, header: str) -> None:
        for binding in self.mcp.bindings.for_server(name):
            if binding.mode == "bridge":
                continue  # no header in the entry
            if binding.secret_mode is SecretMode.FILE:
                self.tokens.ensure_secret_file(name)  # a `{file:}` target must exist or opencode stops working
                continue
            self.mcp.config.remove_header(Path(binding.path), name, header, get_format(binding.client))


def _changed(planned: Credential, current: Credential) -> bool:
    return (planned.tokens.access_token if planned.tokens else None) != (
        current.tokens.access_token if current.tokens else None
    )


def _due(credential: Credential, due_before: float | None) -> bool:
    tokens = credential.tokens
    if tokens is None or tokens.expires_at is None:
        return False
    return tokens.expires_at <= (due_before if due_before is not None else time.time() + VALIDITY_MARGIN_S)


def env_prefix(name: str) -> str:
    """`atlassian` → `ATLASSIAN`, `my-server.dev` → `MY_SERVER_DEV` (for `<NAME>_CLIENT_ID`)."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()
