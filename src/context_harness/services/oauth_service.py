"""OAuthService: the OAuth operations — log in, refresh, log out.

It owns the order that keeps rotating refresh tokens safe: a new refresh token is saved to disk before
the new access token is published anywhere, and only one refresh per server runs at a time, across
processes too (the server's lock in its `ServerState` plus a lock file). Each attempt's outcome goes into
the server's `ServerState` and out through the change channel (`server_state.py`), a new credential with the
lock still held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

import aiohttp
import structlog

from context_harness.config.format import substitutions
from context_harness.oauth.flow import (
    AuthorizationGrant,
    AuthorizationUrlHandler,
    FlowRequest,
    run_authorization_flow,
)
from context_harness.oauth.jwts import key_problem
from context_harness.oauth.machine_grants import PRIVATE_KEY_JWT
from context_harness.oauth.registration import RegistrationLimit
from context_harness.oauth.token_auth import refresh_either_way
from context_harness.oauth.token_client import (
    PermanentError,
    Refreshed,
    RefreshOutcome,
    TransientError,
)
from context_harness.oauth.unanswered import UnansweredRefreshes
from context_harness.primitives.mcp import MCPServer
from context_harness.primitives.oauth import Credential, LoginKind, OAuthTokens, TokenEvent, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.blocking_io import run_config_io
from context_harness.services.client_vault import ClientVault
from context_harness.services.machine_logins import MachineLogins, Refused
from context_harness.services.mcp_service import MCPService
from context_harness.services.publisher import Publisher
from context_harness.services.refresh_outcomes import (
    RefreshAttempt,
    RefreshDone,
    RefreshImpossible,
    RefreshNeedsReauth,
    RefreshNotNeeded,
    RefreshRetry,
    env_prefix,
    no_refresh_token_note,
    refresh_result,
)
from context_harness.services.revocation import revoke_all
from context_harness.services.secret_vault import SecretVault
from context_harness.services.server_state import ServerState, ServerStates
from context_harness.services.step_up import login_scopes
from context_harness.stores.crash_points import AFTER_TOKEN_SAVE, crash_point
from context_harness.stores.lock_file import LockTimeout, file_lock
from context_harness.stores.secret_store import StoreKind

log = structlog.get_logger(__name__)

# Another process holding the server's lock file longer than this is stuck, not busy.
LOCK_TIMEOUT_S = 60.0
# A token with less than this left counts as due: a caller must never get one that dies in flight.
VALIDITY_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """What OAuthService uses of the daemon's settings (`Settings.oauth()`, which holds the defaults)."""

    locks_dir: Path  # one lock file per server: one refresh at a time, across processes too
    http_timeout_s: float
    config_io_timeout_s: float  # reading a server's configs (its URL): a hung mount fails that call
    min_refresh_spacing_s: float  # a server that refuses every token gets at most one refresh per this
    # The https URL of a Client ID Metadata Document for context-harness, tried before Dynamic Client Registration.
    client_metadata_url: str | None


@dataclass(frozen=True, slots=True)
class MachineSetup:
    """A login without a person, as `chctl add NAME --client-credentials | --idp IDP` sets it up, or as
    `chctl auth NAME` changes it (None: keep what is stored)."""

    login: LoginKind | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    signing_alg: str | None = None
    idp: str | None = None
    scopes: list[str] | None = None


@dataclass(frozen=True, slots=True)
class AuthOptions:
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scopes: list[str] | None = None
    port: int = 0
    timeout_s: float = 300.0
    # How a client with a secret authenticates: "client_secret_basic", "client_secret_post" or "none";
    # None: what the registry entry, the registration or the server's metadata says.
    token_auth_method: str | None = None


class OAuthService:
    def __init__(
        self,
        settings: OAuthSettings,
        *,
        vault: SecretVault,
        clients: ClientVault,
        mcp: MCPService,
        publisher: Publisher,
        session: Callable[[], aiohttp.ClientSession],
        states: ServerStates,
        machine: MachineLogins | None = None,
    ) -> None:
        self.settings = settings
        self.vault = vault  # new secret values go through it: the keychain, or the token file
        self.tokens = vault.tokens
        self.clients = clients  # client registrations, their secrets through the vault too
        self.mcp = mcp
        self.publisher = publisher
        self._session = session
        self.states = states
        self.registrations = RegistrationLimit()  # new clients per issuer, every login of this daemon together
        # The logins without a person (client credentials, an identity provider's); None: none can be renewed.
        self.machine = machine
        # Refreshes past their deadline whose answer is awaited: a late one is taken at once.
        self.unanswered = UnansweredRefreshes(lambda name: self.refresh_once(name, force=True))

    def configure(self, settings: OAuthSettings) -> None:
        self.settings = settings

    # --- log in, refresh, log out --------------------------------------------------------------------

    async def authenticate(
        self,
        name: str,
        options: AuthOptions,
        on_authorization_url: AuthorizationUrlHandler,
        paste: asyncio.Queue[str] | None = None,
    ) -> Result[Credential]:
        """Log in to `name` (`oauth/flow.py`), from its recorded URL; store the credential and announce it."""
        known = self.mcp.known(name)
        given_client = bool(options.client_id or (known is not None and known.client_id))
        server_url = await self._ready_to_log_in(name, given_client)
        if isinstance(server_url, Failure):
            return server_url
        grant = await run_authorization_flow(
            self._session(),
            self._flow_request(name, server_url.value, options, known),
            client_store=self.clients,
            on_authorization_url=on_authorization_url,
            paste=paste,
        )
        if isinstance(grant, Failure):
            if known is not None and known.needs_preregistered_client and grant.code is ErrorCode.AUTH_REQUIRED:
                return Failure(
                    grant.error,
                    grant.code,
                    f"{name} needs an OAuth app you register yourself: `chctl auth {name} --client-id ID` "
                    f"(or set {env_prefix(name)}_CLIENT_ID)" + (f", see {known.docs_url}" if known.docs_url else ""),
                )
            return grant
        return await self._store_login(name, server_url.value, grant.value)

    def _flow_request(self, name: str, server_url: str, options: AuthOptions, known: MCPServer | None) -> FlowRequest:
        """The login asked for: the options' client, else the registry's, else one found or registered then."""
        client_id, token_auth_method = options.client_id, options.token_auth_method
        if client_id is None and known is not None and known.client_id:
            client_id = known.client_id
            token_auth_method = token_auth_method or known.token_endpoint_auth_method
        return FlowRequest(
            server_name=name,
            server_url=server_url,
            markers=substitutions(),
            client_id=client_id,
            client_secret=options.client_secret,
            token_auth_method=token_auth_method,
            # A server that refused a call for lack of scope (step-up): this login asks for those scopes too.
            scopes=options.scopes or login_scopes(self.tokens.load(name), self.states.get(name).scopes_wanted),
            port=options.port,
            timeout_s=options.timeout_s,
            http_timeout_s=self.settings.http_timeout_s,
            client_metadata_url=self.settings.client_metadata_url,
            registrations=self.registrations,
        )

    async def _store_login(self, name: str, server_url: str, grant: AuthorizationGrant) -> Result[Credential]:
        credential = _logged_in(name, grant, server_url)
        async with self._lock(name):
            stored = await self.vault.store(credential)
            if isinstance(stored, Failure):
                return stored
            change = self.states.get(name).logged_in(f"{name}: logged in")
            log.info(
                "token_stored",
                server=name,
                expires_at=grant.tokens.expires_at,
                has_refresh_token=grant.tokens.refresh_token is not None,
            )
            await self.states.announce(change)
        return Success(credential)

    async def set_up_machine(self, name: str, server_url: str, setup: MachineSetup) -> Result[Credential]:
        """Store a login without a person for `name` (no token yet: `obtain` gets it). What it had stored for the
        same URL and kind of login stays unless `setup` changes it."""
        problem = machine_setup_problem(setup, name, adding=True)
        if problem is not None:
            return problem
        assert setup.login is not None and setup.client_id is not None
        async with self._lock(name):
            stored = self.tokens.load(name)
            same = stored is not None and stored.server_url == server_url and stored.login is setup.login
            base = Credential(
                name=name, kind="oauth", state=TokenState.PENDING_AUTH, server_url=server_url, login=setup.login
            )
            credential = _with_setup(stored if same and stored is not None else base, setup)
            kept = await self.vault.store(credential)  # the secret or key: the keychain, or the token file
            if isinstance(kept, Failure):
                return kept
            self.states.get(name).stored()  # not announced: it has no token yet, `obtain` gets and announces it
        log.info("machine_login_set_up", server=name, login=setup.login.value, key=setup.private_key is not None)
        return Success(credential)

    async def obtain(self, name: str, setup: MachineSetup | None = None) -> Result[Credential]:
        """A token for a login without a person, now (`chctl auth NAME`, `chctl add`, an IdP's new sign-in): the
        authorization server is found again, and a `needs_reauth` is tried again (a person asked for it)."""
        assert self.machine is not None
        problem = machine_setup_problem(setup, name, adding=False)
        if problem is not None:
            return problem
        state = self.states.get(name)
        try:
            async with self._lock(name):
                credential = self.tokens.load(name)
                if credential is None or credential.login is LoginKind.BROWSER:
                    return Failure(f"{name} has no login without a browser", ErrorCode.NOT_FOUND)
                found = await self.machine.discover(_with_setup(credential, setup) if setup else credential)
                if isinstance(found, Failure):
                    return found
                kept = await self.vault.store(found.value)  # the new secret or key: a later `chctl auth` uses it
                if isinstance(kept, Failure):
                    return kept
                attempt = await self._renew_machine(state, found.value)
        except LockTimeout:
            return Failure(f"another process holds {name}'s lock", ErrorCode.TIMEOUT, "try again shortly")
        return refresh_result(name, attempt, "asked")

    async def _ready_to_log_in(self, name: str, given_client: bool) -> Result[str]:
        """The recorded URL a login of `name` starts from, once the store said it can keep what the login gets
        (`CH_SECRET_STORE=keyring` without a keychain refuses before the browser opens) and, unless a client is
        given, the stored client's secret could be read."""
        storable = await self.vault.can_store_new()
        if isinstance(storable, Failure):
            return storable
        readable = Success(None) if given_client else await self.clients.readable(name)
        return readable if isinstance(readable, Failure) else await self.server_url_off_loop(name, login=True)

    async def refresh_tokens(self, name: str) -> Result[Credential]:
        """Refresh now (`chctl refresh`), whatever the expiry."""
        credential = self.tokens.load(name)
        if credential is None:
            return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "see `chctl status`")
        if credential.kind != "oauth":
            return Failure(f"{name} uses an API key: there is nothing to refresh", ErrorCode.INVALID_PARAMS)
        return refresh_result(name, await self.refresh_once(name, force=True), "asked")

    async def logout(self, name: str) -> Result[dict[str, Any]]:
        """Revoke at the server (RFC 7009) when it has an endpoint, then forget the tokens and headers. An API
        key is refused: a key is replaced (`chctl add -k`) or its server removed, never logged out of."""
        async with self._lock(name):
            credential = self.tokens.load(name)
            if credential is None:
                return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "nothing to log out of")
            if credential.kind == "api_key":  # a key is not a login: forgetting it would only break the server
                return Failure(
                    f"{name} uses an API key, not a login: --logout would delete the key, so it is left as it is",
                    ErrorCode.INVALID_PARAMS,
                    f"to replace the key: `chctl add {name} -k KEY`; to let it go: `chctl remove {name} --forget`",
                )
            outcomes = await revoke_all(self._session(), credential, self.settings.http_timeout_s)
            await self.vault.delete(name)
            change = self.states.get(name).logged_out(f"{name}: logged out")
            configs = await self.publisher.forget(name, credential.header_name)
        revoked = bool(outcomes) and all(o["revoked"] for o in outcomes)
        log.info("credential_forgotten", server=name, revoked=revoked)
        await self.states.announce(change)
        # `configs.failed`: configs that still hold the old header (a hung or unparsable file), to fix by hand.
        return Success({"name": name, "revoked": revoked, "tokens": outcomes, "configs": configs.as_dict()})

    async def refresh_unless_replaced(self, name: str, seen: str | None) -> RefreshAttempt:
        """Refresh `name`, unless its access token `seen` was replaced meanwhile: a server refused it (a 401 to
        the bridge), or it is about to expire (`chctl token`). The same lock as the refresher's, so concurrent
        callers wait for one refresh and a rotating refresh token is never sent twice."""
        state = self.states.get(name)
        try:
            async with self._lock(name):
                credential = self.tokens.load(name)
                if credential is None or credential.kind != "oauth" or credential.tokens is None:
                    fix = credential.fix if credential is not None else None
                    return RefreshNeedsReauth("no login is stored", fix=fix)
                if credential.tokens.access_token != seen:
                    return await self._not_needed(state, credential)
                if credential.state is TokenState.NEEDS_REAUTH:
                    return RefreshNeedsReauth(
                        credential.last_error or "the last refresh was refused", fix=credential.fix
                    )
                # A server that refuses every token would otherwise get a refresh per request.
                since = time.monotonic() - state.refreshed_at
                if since < self.settings.min_refresh_spacing_s:
                    reason = f"the server refused a token refreshed {since:.0f} s ago"
                    return RefreshRetry(reason, self.settings.min_refresh_spacing_s - since)
                return await self._refresh_locked(state, credential, force=True)
        except LockTimeout:
            return await self._lock_busy(state)

    # --- one refresh, safely -------------------------------------------------------------------------

    async def refresh_once(self, name: str, *, force: bool, due_before: float | None = None) -> RefreshAttempt:
        """Refresh `name` unless (`force` is off and) its stored token is no longer due by `due_before`."""
        state = self.states.get(name)
        planned, version = self.tokens.load(name), state.version
        try:
            async with self._lock(name):
                credential = self.tokens.load(name)
                if credential is None or credential.kind != "oauth":
                    return RefreshNeedsReauth("no OAuth credential is stored")  # forgotten meanwhile: nothing to do
                if credential.state is TokenState.NEEDS_REAUTH:
                    # Never send a rejected refresh token again: servers with reuse detection see a replay.
                    return RefreshNeedsReauth(credential.last_error or "a new login is needed", fix=credential.fix)
                if credential.tokens is None and credential.login is LoginKind.BROWSER:
                    return await self._needs_reauth(state, credential, "no OAuth token is stored")
                # Stale work: the token was replaced while we waited (here: the version; elsewhere: the file).
                replaced = state.version != version or (planned is not None and _changed(planned, credential))
                if not force and replaced and not _due(credential, due_before):
                    return await self._not_needed(state, credential)
                return await self._refresh_locked(state, credential, force)
        except LockTimeout:
            return await self._lock_busy(state)

    async def _refresh_locked(self, state: ServerState, credential: Credential, force: bool) -> RefreshAttempt:
        if credential.login is not LoginKind.BROWSER:
            return await self._renew_machine(state, credential)
        tokens = credential.tokens
        assert tokens is not None
        if not tokens.refresh_token or not credential.token_endpoint or not credential.client_id:
            return await self._without_refresh_token(state, credential, force)
        with state.refreshing(time.monotonic()):  # a refresh that raises leaves the phase as it was
            return await self._refresh_with(state, credential)

    async def _refresh_with(self, state: ServerState, credential: Credential) -> RefreshAttempt:
        """The refresh request (or the late answer to the last one) and its outcome, in the record."""
        name, tokens, client_id = credential.name, credential.tokens, credential.client_id
        assert tokens is not None and tokens.refresh_token and client_id
        outcome, auth_method = await self._send_refresh(credential, tokens.refresh_token)
        match outcome:
            case Refreshed(new_tokens):
                if new_tokens.refresh_token is None:  # not rotated: keep using the one we have
                    new_tokens = new_tokens.model_copy(update={"refresh_token": tokens.refresh_token})
                # The way that worked, if it took two.
                fresh = credential.model_copy(update={"token_endpoint_auth_method": auth_method})
                if auth_method is not None and auth_method != credential.token_endpoint_auth_method:
                    self.clients.remember_auth_method(name, client_id, auth_method)
                return await self._store_renewed(fresh, new_tokens)
            case TransientError(reason, retry_after):
                log.warning("token_refresh_failed_transient", server=name, reason=reason, retry_after=retry_after)
                message = f"{name}: refresh failed, retrying ({reason})"
                await self.states.announce(state.failed(reason, retry_after, message))
                return RefreshRetry(reason, retry_after)
            case PermanentError(code, reason):
                if code is ErrorCode.INVALID_CLIENT:
                    await self.forget_client(name, credential.client_id)
                return await self._needs_reauth(state, credential, reason, code)
            case _:
                assert_never(outcome)

    async def _without_refresh_token(
        self, state: ServerState, credential: Credential, force: bool
    ) -> RefreshNeedsReauth | RefreshImpossible:
        """No refresh token was issued: an expired token needs a login; one still valid is used, and the person
        is reminded (by the refresher's look shortly before expiry)."""
        name, tokens = credential.name, credential.tokens
        assert tokens is not None
        if tokens.is_expired(0):
            return await self._needs_reauth(state, credential, "the token expired and no refresh token was issued")
        message = ""
        if not force:  # the refresher's reminder, shortly before expiry: tell the person now
            message = f"{name}: {no_refresh_token_note(credential)}"
            log.info("token_expiring_without_refresh_token", server=name, expires_at=tokens.expires_at)
        await self.states.announce(state.reminded_of_expiry(message))  # looked at again once it has expired
        return RefreshImpossible(credential)

    async def _send_refresh(self, credential: Credential, refresh_token: str) -> tuple[RefreshOutcome, str | None]:
        """The refresh request, or the late answer to the last one (oauth/unanswered.py: a refresh token the
        server may have spent already is never sent again)."""
        assert credential.token_endpoint is not None and credential.client_id is not None
        endpoint, client_id = credential.token_endpoint, credential.client_id

        def send(total_s: float, connect_s: float) -> Coroutine[Any, Any, tuple[RefreshOutcome, str | None]]:
            return refresh_either_way(
                self._session(),
                endpoint,
                refresh_token=refresh_token,
                client_id=client_id,
                client_secret=credential.client_secret,
                auth_method=credential.token_endpoint_auth_method,
                timeout_s=total_s,
                connect_timeout_s=connect_s,
                resource=credential.resource,
                revocation_endpoint=credential.revocation_endpoint,
                markers=substitutions(),
            )

        return await self.unanswered.refresh(credential.name, refresh_token, send, self.settings.http_timeout_s)

    async def _store_renewed(self, credential: Credential, tokens: OAuthTokens) -> RefreshDone:
        """Save new tokens (a rotated refresh token is on disk before anything uses the new access token), then
        announce them: the channel's publisher writes the new header, then people are told."""
        name = credential.name
        event = TokenEvent.REFRESHED if credential.tokens is not None else TokenEvent.NEW
        fresh = credential.model_copy(
            update={"tokens": tokens, "state": TokenState.ACTIVE, "last_error": None, "fix": None}
        )
        await self.vault.store(fresh, rotation=True)  # before any use of it; never refused (SecretVault)
        crash_point(AFTER_TOKEN_SAVE)
        message = f"{name}: token refreshed" if event is TokenEvent.REFRESHED else f"{name}: got a token"
        change = self.states.get(name).stored(event, message)
        log.info("token_refreshed", server=name, expires_at=tokens.expires_at, login=credential.login.value)
        await self.states.announce(change)
        return RefreshDone(fresh)

    async def _renew_machine(self, state: ServerState, credential: Credential) -> RefreshAttempt:
        """A login without a person has no refresh token: ask for a token again, the same way as the first."""
        if self.machine is None or credential.token_endpoint is None:
            reason = "the server's authorization server was never found"
            return await self._needs_reauth(state, credential, reason, fix=f"chctl auth {credential.name}")
        with state.refreshing(time.monotonic()):  # a renewal that raises leaves the phase as it was
            outcome, used = await self.machine.renew(credential)
            match outcome:
                case Refreshed(tokens):
                    return await self._store_renewed(used, tokens)
                case TransientError(reason, retry_after):
                    log.warning("token_renewal_failed_transient", server=credential.name, reason=reason)
                    message = f"{credential.name}: getting a new token failed, retrying ({reason})"
                    await self.states.announce(state.failed(reason, retry_after, message))
                    return RefreshRetry(reason, retry_after)
                case Refused(code, reason, fix, told):
                    return await self._needs_reauth(state, used, reason, code, fix=fix, quiet=told)
                case _:
                    assert_never(outcome)

    async def _lock_busy(self, state: ServerState) -> RefreshRetry:
        """Another process holds the server's lock file: one more failed attempt, the refresher backs off."""
        reason = "another process holds the refresh lock"
        await self.states.announce(state.failed(None))  # not the server's error: the last one stays shown
        return RefreshRetry(reason, None)

    async def _not_needed(self, state: ServerState, credential: Credential) -> RefreshNotNeeded:
        """Someone else refreshed it: the backoff of our own failures no longer applies."""
        await self.states.announce(state.refreshed_elsewhere())
        return RefreshNotNeeded(credential)

    async def _needs_reauth(
        self,
        state: ServerState,
        credential: Credential,
        reason: str,
        code: ErrorCode = ErrorCode.INVALID_GRANT,
        *,
        fix: str | None = None,
        quiet: bool = False,
    ) -> RefreshNeedsReauth:
        """Only a person can help: `fix` is the command (else `chctl auth NAME`); `quiet`, they were told already."""
        name, saved = state.name, credential.kind == "oauth"
        if saved:
            update = {"state": TokenState.NEEDS_REAUTH, "last_error": reason, "fix": fix}
            self.tokens.save(credential.model_copy(update=update))
        log.warning("token_needs_reauth", server=name, reason=reason)
        message = f"{name} needs a new login: run `{fix or f'chctl auth {name}'}` ({reason})"
        await self.states.announce(state.needs_login(reason, message, saved=saved, quiet=quiet))
        return RefreshNeedsReauth(reason, code, fix=fix)

    async def forget_client(self, name: str, client_id: str | None) -> None:
        """The server no longer knows `client_id`: drop its stored registration (and its secret's keychain item),
        so the next `chctl auth` registers a new client instead of looping on the dead one."""
        if client_id is not None and await self.clients.drop(name, client_id):
            log.warning("client_registration_dropped", server=name, reason="the server does not know the client")

    # --- helpers -------------------------------------------------------------------------------------

    def state_of(self, credential: Credential) -> TokenState:
        """What `status`, `token` and `check` show for `credential` (`ServerState.effective_state`)."""
        live = self.states.peek(credential.name)
        return live.effective_state(credential) if live is not None else credential.state

    async def server_url_off_loop(self, name: str, *, login: bool = False) -> Result[str]:
        """The recorded URL (`MCPService.server_url`), in a thread: an older file's migration reads configs."""
        return await run_config_io(
            lambda: self.mcp.server_url(name, login=login),
            self.settings.config_io_timeout_s,
            f"reading {name}'s configs",
            key=f"configs of {name}",  # a bridge retrying on a hung config waits for the first read
        )

    @asynccontextmanager
    async def _lock(self, name: str) -> AsyncIterator[None]:
        """The in-process lock, then the lock file: one refresh per server, across processes too."""
        async with self.states.get(name).lock:
            async with file_lock(self.settings.locks_dir / f"{name}.lock", LOCK_TIMEOUT_S):
                yield

    async def repair_configs(self) -> None:
        """Make every bound config's managed header equal the stored credential (from disk, not memory).

        Run at start and at every wall-clock check: it mends what a crash between saving a token and
        writing the configs left behind, and a write that failed earlier (a file fixed by hand, a mount
        back). A config already right is only read. A server being refreshed right now is skipped: its
        refresh writes the headers itself.
        """
        await self.heal_secrets()
        for name in self.mcp.bound_servers():
            if self.states.get(name).lock.locked() or self.tokens.load(name) is None:
                continue
            try:
                async with self._lock(name):
                    await self.publisher.publish(name)
            except LockTimeout:
                continue

    async def heal_secrets(self) -> None:
        """Values the keychain could not take or give earlier: moved back into it, or read now (then the
        credential is announced: its headers are written and its refresh planned)."""
        await self.vault.look_again()
        for name in self.vault.needs_healing():
            if self.states.get(name).lock.locked():
                continue
            try:
                async with self._lock(name):
                    readable = await self.vault.heal(name)
            except LockTimeout:
                continue
            if readable:
                await self.states.announce(self.states.get(name).stored())

    async def migrate_secrets(self, to: StoreKind) -> list[dict[str, Any]]:
        """`chctl secrets migrate --to TO`: each server's secret values (its credential's, its client
        registration's), under its server's lock (no refresh runs while they move)."""
        outcomes: list[dict[str, Any]] = []
        await self.vault.before_migration()
        for name in self.vault.names():
            try:
                async with self._lock(name):
                    moved = await self.vault.migrate(name, to)
            except LockTimeout:
                moved = Failure(f"{name}: another process holds its refresh lock", ErrorCode.TIMEOUT, "try again")
            if isinstance(moved, Failure):
                outcomes.append({"name": name, "outcome": "failed", "error": moved.error})
            elif moved.value != "none":  # no secret at all (a public client's registration): nothing to say
                outcomes.append({"name": name, "outcome": moved.value, "error": None})
        return outcomes


def _logged_in(name: str, g: AuthorizationGrant, server_url: str) -> Credential:
    """The credential a login made."""
    return Credential(
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
        server_url=server_url,  # where this credential may go, whatever a config says later
    )


def _changed(planned: Credential, current: Credential) -> bool:
    return (planned.tokens.access_token if planned.tokens else None) != (
        current.tokens.access_token if current.tokens else None
    )


def _due(credential: Credential, due_before: float | None) -> bool:
    tokens = credential.tokens
    if tokens is None or tokens.expires_at is None:
        return False
    return tokens.expires_at <= (due_before if due_before is not None else time.time() + VALIDITY_MARGIN_S)


def machine_setup_problem(setup: MachineSetup | None, name: str, *, adding: bool) -> Failure | None:
    """What makes `setup` unusable, said before anything is stored; `adding`: given to `chctl add` (else to
    `chctl auth`), whose flags the hint names."""
    if setup is None:
        return None
    if setup.private_key is not None:
        problem = key_problem(setup.private_key, setup.signing_alg or "ES256")
        if problem is not None:
            hint = (
                f"run `chctl add {name} --private-key FILE --signing-alg ES256|RS256` with a key of that kind"
                if adding
                else f"run `chctl auth {name} --private-key FILE --signing-alg ES256|RS256` with a key of that kind"
            )
            return Failure(problem, ErrorCode.INVALID_PARAMS, hint)
    if setup.login is LoginKind.CLIENT_CREDENTIALS and not (setup.client_secret or setup.private_key):
        return Failure(
            "client credentials need the client's secret or its private key",
            ErrorCode.AUTH_REQUIRED,
            f"set {env_prefix(name)}_CLIENT_SECRET, or run `chctl add {name} --client-secret -` (a hidden prompt) "
            f"or `chctl add {name} --private-key FILE`",
        )
    return None


def _with_setup(credential: Credential, setup: MachineSetup) -> Credential:
    """`credential` with what `setup` changes: a key replaces a secret and the other way round."""
    update: dict[str, Any] = {k: v for k, v in (("client_id", setup.client_id), ("idp", setup.idp)) if v}
    if setup.scopes:
        update["scopes"] = setup.scopes
    if setup.private_key is not None:
        update |= {"private_key": setup.private_key, "signing_alg": setup.signing_alg or "ES256"}
        update |= {"client_secret": None, "token_endpoint_auth_method": PRIVATE_KEY_JWT, "assertion_audience": None}
    elif setup.client_secret is not None:
        update |= {"client_secret": setup.client_secret, "private_key": None, "signing_alg": None}
        if credential.token_endpoint_auth_method == PRIVATE_KEY_JWT:
            update["token_endpoint_auth_method"] = None
    return credential.model_copy(update=update)
