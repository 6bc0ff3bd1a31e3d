"""TokenAccess: the credential that is valid now, for `chctl token` and the Python API (`context_harness.api`).

This is a way to read secrets out of the daemon, so every read is logged with the server and the caller's
pid (never the value) and counted for `chctl status --json`. A token that expires within the caller's margin
is refreshed first, through OAuthService's single flight: concurrent callers queue on the server's lock (the
refresher's too), and a token someone else replaced meanwhile is taken as it is, not refreshed again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import structlog

from context_harness.primitives.mcp import MCPAuthType
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.primitives.outside_values import describe_url
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService
from context_harness.services.refresh_outcomes import RefreshDone, RefreshImpossible, RefreshRetry, refresh_result
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

DEFAULT_MIN_VALID_S = 60.0  # `chctl token`'s default margin: a token handed out must not die in flight
# A caller's margin is at most this fraction of the token's lifetime: a server issuing 4 s tokens, asked for
# 60 s of validity, would otherwise be sent a refresh at every call.
MAX_MARGIN_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class ValidCredential:
    """What a caller sends: `header_name: header_value`, where `secret` is the access token or API key."""

    name: str
    header_name: str
    header_value: str = field(repr=False)
    secret: str = field(repr=False)
    expires_at: float | None
    refreshed: bool  # this read refreshed the token first
    # Scopes the server refused a call for lack of: this token will not do for those calls (`chctl auth NAME`).
    scopes_wanted: tuple[str, ...] = ()


@dataclass(slots=True)
class TokenReads:
    """How often a server's credential was read, and by whom last (for `chctl status --json`)."""

    count: int = 0
    last_at: float | None = None
    last_pid: int | None = None


def margin_for(tokens: OAuthTokens, min_valid_s: float) -> float:
    """How long before expiry `tokens` counts as due for a caller asking for `min_valid_s` seconds."""
    if tokens.expires_at is not None and tokens.issued_at:
        lifetime = tokens.expires_at - tokens.issued_at
        if lifetime > 0:
            return min(min_valid_s, lifetime * MAX_MARGIN_FRACTION)
    return min_valid_s


class TokenAccess:
    def __init__(self, tokens: TokenStore, oauth: OAuthService, mcp: MCPService) -> None:
        self.tokens = tokens
        self.oauth = oauth
        self.mcp = mcp
        self.reads: dict[str, TokenReads] = {}

    def reads_of(self, name: str) -> TokenReads:
        return self.reads.get(name) or TokenReads()

    async def valid_credential(
        self,
        name: str,
        min_valid_s: float = DEFAULT_MIN_VALID_S,
        caller_pid: int | None = None,
        *,
        for_url: str | None = None,
    ) -> Result[ValidCredential]:
        """`name`'s credential, valid for `min_valid_s` more seconds where the server allows (refreshed first
        if not), or AUTH_REQUIRED / TOKEN_EXPIRED / NOT_FOUND with the command that helps. With `for_url` (the
        URL the caller will send it to), only if that is the URL recorded for `name`."""
        elsewhere = await self._elsewhere(name, for_url) if for_url is not None else None
        found = elsewhere or await self._valid(name, min_valid_s)
        if isinstance(found, Failure):
            log.info("token_read_refused", server=name, caller_pid=caller_pid, code=found.code.value)
            return found
        reads = self.reads.setdefault(name, TokenReads())
        reads.count += 1
        reads.last_at = time.time()
        reads.last_pid = caller_pid
        log.info("token_read", server=name, caller_pid=caller_pid, refreshed=found.value.refreshed)
        state = self.oauth.states.peek(name)
        return Success(replace(found.value, scopes_wanted=state.scopes_wanted)) if state is not None else found

    async def _elsewhere(self, name: str, for_url: str) -> Failure | None:
        """A caller about to send `name`'s credential to another URL than the recorded one (a config that
        changed since `chctl add`) gets nothing."""
        recorded = await self.oauth.server_url_off_loop(name)
        if isinstance(recorded, Failure):
            return recorded
        if for_url == recorded.value:
            return None
        return Failure(
            f"{name}'s entry points at {describe_url(for_url)}, not at {describe_url(recorded.value)} where its "
            "credential belongs: nothing was handed out",
            ErrorCode.INVALID_PARAMS,
            f"run `chctl add {name}` to point the entry back, or `chctl remove {name}`",
        )

    async def _valid(self, name: str, min_valid_s: float) -> Result[ValidCredential]:
        credential = self.tokens.load(name)
        if credential is None:
            return self._no_credential(name)
        if credential.kind == "api_key":
            return _handed_out(credential, refreshed=False)
        tokens = credential.tokens
        if tokens is None or credential.state is TokenState.PENDING_AUTH:
            return _login_needed(name, f"{name} has not logged in yet", credential.fix)
        live = self.oauth.states.get(name)
        if live.effective_state(credential) is TokenState.NEEDS_REAUTH:
            why = live.login_reason(credential) or "refresh refused"
            return _login_needed(name, f"{name} needs a new login: {why}", credential.fix)
        if not tokens.is_expired(margin_for(tokens, min_valid_s)):
            return _handed_out(credential, refreshed=False)
        # Shielded: a caller that hangs up must not cancel a refresh between rotation and save.
        # Its outcome reaches the refresher's plan through the change channel, like every refresh's.
        attempt = await asyncio.shield(self.oauth.refresh_unless_replaced(name, tokens.access_token))
        if isinstance(attempt, RefreshRetry | RefreshImpossible) and not tokens.is_expired(0):
            return _handed_out(credential, refreshed=False)  # still valid, if for less than asked: the best there is
        fresh = refresh_result(name, attempt, "due")
        if isinstance(fresh, Failure):
            return fresh
        # Not refreshed here when someone else replaced it while we waited for the lock (the refresh in flight).
        return _handed_out(fresh.value, refreshed=isinstance(attempt, RefreshDone))

    def _no_credential(self, name: str) -> Failure:
        known = self.mcp.known(name)
        if known is None and not self.mcp.bindings.for_server(name):
            unknown = self.mcp.get_server_info(name)
            assert isinstance(unknown, Failure)
            return unknown
        if known is not None and known.auth_type is MCPAuthType.API_KEY:
            return Failure(
                f"{name} has no API key stored",
                ErrorCode.AUTH_REQUIRED,
                f"`chctl add {name} --api-key-env VAR`, with the key in VAR",
            )
        return _login_needed(name, f"{name} has no credential: it has not logged in yet")


def _login_needed(name: str, message: str, fix: str | None = None) -> Failure:
    return Failure(message, ErrorCode.AUTH_REQUIRED, f"run `{fix or f'chctl auth {name}'}`")


def _handed_out(credential: Credential, *, refreshed: bool) -> Result[ValidCredential]:
    secret = credential.secret
    if not secret:
        return _login_needed(credential.name, f"{credential.name} has no credential stored")
    return Success(
        ValidCredential(
            name=credential.name,
            header_name=credential.header_name,
            header_value=credential.header_value(),
            secret=secret,
            expires_at=credential.tokens.expires_at if credential.tokens else None,
            refreshed=refreshed,
        )
    )
