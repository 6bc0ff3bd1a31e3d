"""IdpService: the company identity providers (`chctl idp add|login|list`) and the user's sign-in at each.

One sign-in serves every MCP server whose authorization server trusts the IdP (enterprise-managed authorization,
SEP-990): `id_token` hands a valid ID token to a server's renewal (`MachineLogins`), renewing it first with the
IdP's refresh token when it is about to expire, under the IdP's own lock (one refresh at a time, across processes
too), and the refresher renews it ahead of expiry like any token (`refresh_once`).

When the sign-in itself needs a person (no refresh token, or the IdP refused it), the IdP turns `needs_reauth` and
its change channel tells the person once, naming `chctl idp login IDP`; the servers that depend on it then say the
same without telling anyone again.

The sign-in's tokens and the client secret rest where every secret does (stores/idp_store.py): new values are
stored through the SecretVault (the keychain item first), a sign-in is used only once the keychain gave them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

import aiohttp
import structlog

from context_harness.config.format import substitutions
from context_harness.oauth.discovery import discover_issuer
from context_harness.oauth.flow import AuthorizationUrlHandler, FlowRequest, run_authorization_flow
from context_harness.oauth.flow_client import RegisteredClients, explicit_auth_method
from context_harness.oauth.jwts import id_token_claims
from context_harness.oauth.token_auth import refresh_either_way
from context_harness.oauth.token_client import PermanentError, Refreshed, RefreshOutcome, TransientError
from context_harness.oauth.unanswered import UnansweredRefreshes
from context_harness.primitives.idp import IdpLogin
from context_harness.primitives.oauth import LoginKind, OAuthTokens, TokenEvent, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.secret_vault import SecretVault
from context_harness.services.server_state import SECRET_UNREADABLE, Plannable, ServerState, ServerStates
from context_harness.stores.idp_store import IdpStore, dump
from context_harness.stores.lock_file import LockTimeout, file_lock
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

LOCK_TIMEOUT_S = 60.0
OPENID = "openid"
# An ID token with less than this left is renewed before a server's token is derived from it.
ID_TOKEN_MARGIN_S = 30.0
# ... but never more than this fraction of its lifetime (4 s tokens in tests, 5 min ones at some IdPs).
MAX_MARGIN_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class IdpSettings:
    locks_dir: Path  # `locks/idps/<name>.lock`
    http_timeout_s: float


@dataclass(frozen=True, slots=True)
class IdToken:
    """A valid ID token to exchange (never shown or logged)."""

    token: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class SignInNeeded:
    """Only a person can help: `chctl idp login IDP`. `told`: the person was told already (by the IdP's own
    change), so the servers that depend on it tell nobody again."""

    reason: str
    fix: str
    told: bool


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A sign-in whose values the keychain did not give. `lost`: it answered without them (cleared, or written
    for another registration): only adding the IdP again mends that; else it is locked or gone for now."""

    name: str
    reason: str
    lost: bool

    @property
    def failure(self) -> Failure:
        hint = f"run `{add_fix(self.name)}`, then `{login_fix(self.name)}`" if self.lost else UNLOCK_HINT
        return Failure(f"{self.name}'s sign-in cannot be read: {self.reason}", ErrorCode.KEYCHAIN_UNAVAILABLE, hint)

    @property
    def outcome(self) -> TransientError | SignInNeeded:
        """What a server's renewal makes of it: wait for the keychain, or a person."""
        reason = f"its sign-in cannot be read: {self.reason}"
        return SignInNeeded(reason, add_fix(self.name), False) if self.lost else TransientError(reason)


UNLOCK_HINT = "unlock the keychain (or start its service), then try again"


def login_fix(name: str) -> str:
    return f"chctl idp login {name}"


def add_fix(name: str) -> str:
    return f"chctl idp add {name} --issuer URL --client-id ID"


class IdpService:
    def __init__(
        self,
        settings: IdpSettings,
        *,
        store: IdpStore,
        vault: SecretVault,
        tokens: TokenStore,
        clients: RegisteredClients,
        session: Callable[[], aiohttp.ClientSession],
        states: ServerStates,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.tokens = tokens
        self.clients = clients
        self._session = session
        self.states = states  # the IdPs' own: live state, locks, plans; its channel tells people once
        self._unread: set[str] = set()  # sign-ins the keychain did not give: announced once it does (`repair`)
        # Refreshes past their deadline whose answer is awaited: a late one is taken at once.
        self.unanswered = UnansweredRefreshes(lambda name: self.refresh_once(name, force=True))

    def configure(self, settings: IdpSettings) -> None:
        self.settings = settings

    def waiting_for_sign_in(self, name: str) -> bool:
        """Whether `name` has no sign-in a server's token can be derived from (none yet, or refused)."""
        login = self.store.metadata(name)
        return login is None or login.state is not TokenState.ACTIVE

    async def usable(self, name: str) -> Result[IdpLogin]:
        """`name`'s IdP with its sign-in's values, once the keychain gave them (asked again if it did not)."""
        unreadable = await self._unreadable(name)
        if unreadable is not None:
            return unreadable.failure
        login = self.store.load(name)
        return Success(login) if login is not None else not_added(name)

    async def _unreadable(self, name: str) -> Unreadable | None:
        reason = await self.vault.unreadable(self.store.records, name)
        if reason is None:
            return None
        answered = self.vault.keychain is not None and self.vault.problem is None
        return Unreadable(name, reason, lost=answered)

    def dependents(self, name: str) -> list[str]:
        """The servers whose token is derived from `name`'s sign-in."""
        return [c.name for c in self.tokens.all() if c.login is LoginKind.IDP and c.idp == name]

    # --- chctl idp add / login ----------------------------------------------------------------------

    async def add(
        self, name: str, issuer: str, client_id: str, secret: str | None, scopes: list[str]
    ) -> Result[IdpLogin]:
        """Record the IdP (its metadata is read now: a wrong issuer is said at once). A sign-in made already for
        the same issuer and client is kept."""
        found = await discover_issuer(self._session(), issuer, self.settings.http_timeout_s, browser=False)
        if isinstance(found, Failure):
            return found
        metadata = found.value.auth_server
        async with self.lock(name):
            unreadable = await self._unreadable(name)
            if unreadable is not None and not unreadable.lost:
                return unreadable.failure  # a locked keychain: what it holds is kept, not written over
            stored = self.store.load(name)
            same = stored is not None and stored.issuer == metadata.issuer and stored.client_id == client_id
            base = (
                stored
                if same and stored is not None
                else IdpLogin(name=name, issuer=metadata.issuer, client_id=client_id)
            )
            login = base.model_copy(
                update={
                    "client_secret": secret if secret is not None else base.client_secret,
                    "token_endpoint": metadata.token_endpoint,
                    "token_endpoint_auth_method": explicit_auth_method(secret or base.client_secret, metadata),
                    "revocation_endpoint": metadata.revocation_endpoint,
                    "scopes": list(dict.fromkeys([OPENID, *scopes])),
                }
            )
            kept = await self.vault.keep(self.store.records, name, dump(login))
            if isinstance(kept, Failure):
                return kept
        log.info("idp_added", idp=name, issuer=metadata.issuer, kept_sign_in=same)
        return Success(login)

    async def sign_in(
        self, name: str, on_url: AuthorizationUrlHandler, paste: asyncio.Queue[str], port: int, timeout_s: float
    ) -> Result[IdpLogin]:
        """OpenID Connect in the browser (authorization code + PKCE, `openid` and `offline_access`)."""
        usable = await self.usable(name)
        if isinstance(usable, Failure):
            return usable
        login = usable.value
        request = FlowRequest(
            server_name=name,
            server_url=login.issuer,
            markers=substitutions(),
            client_id=login.client_id,
            client_secret=login.client_secret,
            token_auth_method=login.token_endpoint_auth_method,
            scopes=login.scopes,
            port=port,
            timeout_s=timeout_s,
            http_timeout_s=self.settings.http_timeout_s,
            issuer=login.issuer,
            remember_client=False,
        )
        grant = await run_authorization_flow(
            self._session(), request, client_store=self.clients, on_authorization_url=on_url, paste=paste
        )
        if isinstance(grant, Failure):
            return grant
        if grant.value.tokens.id_token is None:
            return Failure(f"{login.issuer} issued no ID token", ErrorCode.OAUTH_ERROR, "is `openid` among its scopes?")
        return await self._signed_in(name, grant.value.tokens)

    async def sign_in_with_id_token(self, name: str, id_token: str) -> Result[IdpLogin]:
        """An ID token from the user's own SSO tool: used until it expires (there is no refresh token)."""
        return await self._signed_in(name, OAuthTokens(access_token="", id_token=id_token))

    async def _signed_in(self, name: str, tokens: OAuthTokens) -> Result[IdpLogin]:
        async with self.lock(name):
            usable = await self.usable(name)
            if isinstance(usable, Failure):
                return usable
            login = usable.value
            assert tokens.id_token is not None
            claims = id_token_claims(tokens.id_token, login.issuer, login.client_id)
            if isinstance(claims, Failure):
                return claims
            signed_in = login.model_copy(
                update={
                    "state": TokenState.ACTIVE,
                    "id_token": tokens.id_token,
                    "refresh_token": tokens.refresh_token,
                    "access_token": tokens.access_token or None,
                    "issued_at": claims.value.issued_at,
                    "expires_at": claims.value.expires_at,
                    "subject": claims.value.subject,
                    "last_error": None,
                }
            )
            kept = await self.vault.keep(self.store.records, name, dump(signed_in))
            if isinstance(kept, Failure):
                return kept
            change = self.states.get(name).stored(TokenEvent.NEW, f"{name}: signed in")
        log.info("idp_signed_in", idp=name, has_refresh_token=tokens.refresh_token is not None)
        await self.states.announce(change)
        return Success(signed_in)

    # --- what a server's renewal asks for ------------------------------------------------------------

    async def id_token(self, name: str) -> IdToken | TransientError | SignInNeeded:
        """A valid ID token of `name`, renewed first when it is about to expire."""
        state = self.states.get(name)
        try:
            async with self.lock(name):
                unreadable = await self._unreadable(name)
                if unreadable is not None:
                    return unreadable.outcome
                login = self.store.load(name)
                if login is None:
                    return SignInNeeded(f"the identity provider {name} is not added", f"chctl idp add {name}", False)
                if login.id_token and not _due(login):
                    return IdToken(login.id_token, login.expires_at)
                renewed = await self._refresh_locked(state, login)
        except LockTimeout:
            return TransientError(f"another process holds {name}'s sign-in lock")
        if isinstance(renewed, IdpLogin) and renewed.id_token is not None:
            return IdToken(renewed.id_token, renewed.expires_at)
        return renewed if not isinstance(renewed, IdpLogin) else TransientError("no ID token after the refresh")

    # --- renewal, by the refresher or on demand -------------------------------------------------------

    # --- what the refresher asks (see `workers.refresher.Renewals`) ----------------------------------------

    label = "idp"

    def names(self) -> list[str]:
        return self.store.names()

    def plannable(self, name: str) -> Plannable | None:
        login = self.store.load(name)
        if login is None and self.store.metadata(name) is not None:
            self._unread.add(name)  # its values rest in a keychain that has not given them: `repair` asks again
        lifetime = login.lifetime() if login is not None and login.state is TokenState.ACTIVE else None
        return Plannable(lifetime, lifetime.refresh_token is not None) if lifetime is not None else None

    async def repair(self) -> None:
        """A sign-in the keychain did not give (at start, or since) is asked for again; once given, it is
        announced, so the refresher plans it. (No config to mend: an IdP's sign-in is written into none.)"""
        for name in sorted(self._unread):
            if await self.vault.unreadable(self.store.records, name) is None and self.store.load(name) is not None:
                self._unread.discard(name)
                await self.states.announce(self.states.get(name).stored())

    async def refresh_once(self, name: str, *, force: bool, due_before: float | None = None) -> object:
        """The refresher's: renew the sign-in unless someone else did while this waited."""
        state = self.states.get(name)
        version = state.version
        try:
            async with self.lock(name):
                login = self.store.load(name)
                if login is None or login.state is not TokenState.ACTIVE or login.id_token is None:
                    return None
                if not force and state.version != version and not _due(login, due_before):
                    return None
                return await self._refresh_locked(state, login)
        except LockTimeout:
            return await self._retry_later(state, "another process holds the sign-in lock")

    async def _refresh_locked(self, state: ServerState, login: IdpLogin) -> IdpLogin | TransientError | SignInNeeded:
        name = login.name
        if login.state is TokenState.NEEDS_REAUTH:
            return SignInNeeded(login.last_error or "the sign-in was refused", login_fix(name), True)
        if not login.refresh_token or not login.token_endpoint:
            if login.id_token is None:
                return SignInNeeded(f"nobody has signed in to {name} yet", login_fix(name), False)
            return await self._needs_person(state, login, "the ID token expired and no refresh token was issued")
        with state.refreshing(time.monotonic()):  # a renewal that raises leaves the phase as it was
            return await self._renew(state, login)

    async def _renew(self, state: ServerState, login: IdpLogin) -> IdpLogin | TransientError | SignInNeeded:
        """The refresh request (or the late answer to the last one) and its outcome, in the record."""
        name, endpoint, refresh_token = login.name, login.token_endpoint, login.refresh_token
        assert endpoint is not None and refresh_token is not None

        def send(total_s: float, connect_s: float) -> Coroutine[Any, Any, tuple[RefreshOutcome, str | None]]:
            return refresh_either_way(
                self._session(),
                endpoint,
                refresh_token=refresh_token,
                client_id=login.client_id,
                client_secret=login.client_secret,
                auth_method=login.token_endpoint_auth_method,
                timeout_s=total_s,
                connect_timeout_s=connect_s,
                markers=substitutions(),
            )

        # The late answer to the last refresh if it was not answered in time (a rotated token is never replayed).
        outcome, _method = await self.unanswered.refresh(name, refresh_token, send, self.settings.http_timeout_s)
        match outcome:
            case Refreshed(tokens):
                return await self._refreshed(state, login, tokens)
            case TransientError(reason, retry_after):
                return await self._retry_later(state, reason, retry_after)
            case PermanentError(_code, reason):
                return await self._needs_person(state, login, reason)
            case _:
                assert_never(outcome)

    async def _refreshed(self, state: ServerState, login: IdpLogin, tokens: OAuthTokens) -> IdpLogin | SignInNeeded:
        if tokens.id_token is None:  # an IdP that renews access tokens only: the ID token cannot be renewed
            return await self._needs_person(state, login, "the identity provider's refresh issued no new ID token")
        claims = id_token_claims(tokens.id_token, login.issuer, login.client_id)
        if isinstance(claims, Failure):
            return await self._needs_person(state, login, f"its refresh issued an unusable ID token: {claims.error}")
        fresh = login.model_copy(
            update={
                "id_token": tokens.id_token,
                "refresh_token": tokens.refresh_token or login.refresh_token,  # rotated, or the same one kept
                "access_token": tokens.access_token,
                "issued_at": claims.value.issued_at,
                "expires_at": claims.value.expires_at,
                "last_error": None,
            }
        )
        # The rotated refresh token is stored before anything uses the new ID token; never refused (SecretVault).
        await self.vault.keep(self.store.records, login.name, dump(fresh), rotation=True)
        change = self.states.get(login.name).stored(TokenEvent.REFRESHED, f"{login.name}: sign-in renewed")
        log.info("idp_refreshed", idp=login.name, expires_at=fresh.expires_at)
        await self.states.announce(change)
        return fresh

    async def _retry_later(self, state: ServerState, reason: str, retry_after: float | None = None) -> TransientError:
        log.warning("idp_refresh_failed_transient", idp=state.name, reason=reason)
        message = f"{state.name}: renewing the sign-in failed ({reason})"
        await self.states.announce(state.failed(reason, retry_after, message))
        return TransientError(reason, retry_after)

    async def _needs_person(self, state: ServerState, login: IdpLogin, reason: str) -> SignInNeeded:
        """The sign-in needs a person: say so once, with every server that waits for it."""
        name = login.name
        self.store.save(login.model_copy(update={"state": TokenState.NEEDS_REAUTH, "last_error": reason}))
        waiting = self.dependents(name)
        log.warning("idp_needs_sign_in", idp=name, reason=reason, servers=waiting)
        servers = f"; the servers waiting for it: {', '.join(waiting)}" if waiting else ""
        message = f"{name} needs a new sign-in: run `{login_fix(name)}` ({reason}){servers}"
        await self.states.announce(state.needs_login(reason, message, saved=True))
        return SignInNeeded(reason, login_fix(name), True)

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        async with self.states.get(name).lock:
            async with file_lock(self.settings.locks_dir / "idps" / f"{name}.lock", LOCK_TIMEOUT_S):
                yield


def _due(login: IdpLogin, due_before: float | None = None) -> bool:
    """Whether the ID token must be renewed before use (or by `due_before`)."""
    if login.expires_at is None:
        return False
    lifetime = max(login.expires_at - (login.issued_at or login.expires_at), 0.0)
    margin = min(ID_TOKEN_MARGIN_S, lifetime * MAX_MARGIN_FRACTION)
    return login.expires_at <= (due_before if due_before is not None else time.time() + margin)


def not_added(name: str) -> Failure:
    return Failure(
        f"no identity provider named {name}",
        ErrorCode.NOT_FOUND,
        f"add it first: `chctl idp add {name} --issuer URL --client-id ID`",
    )


def idp_row(idps: IdpService, name: str) -> dict[str, Any]:
    """`chctl idp list`'s row for `name` (and `status`'s): no token, only where the sign-in stands and rests."""
    login = idps.store.metadata(name)
    values = idps.store.load(name)
    place = idps.vault.place_of(idps.store.records, name)
    live = idps.states.peek(name)
    plan = live.plan if live is not None else None
    state = login.state if login is not None else TokenState.PENDING_AUTH
    state = live.effective_state(login) if live is not None and login is not None else state
    last_error = (live.error if live is not None else None) or (login.last_error if login else None)
    unreadable = place is not None and place["where"] == "keychain" and values is None and place["problem"]
    return {
        "name": name,
        "issuer": login.issuer if login is not None else None,
        "client_id": login.client_id if login is not None else None,
        "state": SECRET_UNREADABLE if unreadable else state.value,
        "subject": login.subject if login is not None else None,
        "expires_at": login.expires_at if login is not None else None,
        "has_refresh_token": bool(values is not None and values.refresh_token),
        "next_refresh_at": plan.due if plan is not None and plan.refresh else None,
        "last_error": place["problem"] if unreadable and place is not None else last_error,
        "servers": idps.dependents(name),
        "secret_at": [place] if place is not None else [],
        "fix": login_fix(name)
        if not unreadable and state in (TokenState.PENDING_AUTH, TokenState.NEEDS_REAUTH)
        else None,
    }
