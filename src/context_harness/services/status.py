"""One server's status, built in one place for `chctl status`, `chctl doctor`, `chctl auth --status` and the
results of a login or a refresh: what is stored on disk, what is true right now (refreshing, retrying, the
last error), where the server is configured, and the live bridges carrying it (all kept in its `ServerState`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from context_harness.primitives.mcp import MCPAuthType, SecretMode
from context_harness.primitives.oauth import Credential, LoginKind, TokenState
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services import recorded_urls
from context_harness.services.mcp_service import MCPService, recorded_auth
from context_harness.services.refresh_outcomes import no_refresh_token_note
from context_harness.services.server_state import SECRET_UNREADABLE, ServerState, ServerStates
from context_harness.services.token_access import TokenReads
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

NO_AUTH = "no_auth"  # the state of a server that needs no credential
NEEDS_KEY = "needs_key"  # an API-key server (the registry's, or one that answered 401 to `chctl add`) without one


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """One live `chctl bridge` session."""

    id: int
    transport: str | None  # streamable-http or sse; None until the first exchange
    started_at: float
    requests: int
    renewals: int  # credentials refreshed because the server refused one
    reinitializations: int  # upstream sessions set up again (the server forgot ours, or the daemon restarted)
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ServerStatus:
    name: str
    state: str  # a TokenState value, or `no_auth`
    auth_type: MCPAuthType = MCPAuthType.NONE
    usable: bool = False  # a credential that can be sent right now
    expires_at: float | None = None
    has_refresh_token: bool = False
    scopes: list[str] | None = None
    issuer: str | None = None
    next_refresh_at: float | None = None
    configs: list[str] = field(default_factory=list)  # the configs that carry it
    config_errors: dict[str, str] = field(default_factory=dict)  # configs whose last write failed, and why
    # Of those, the configs whose entry points away from the recorded URL: the header was taken out.
    url_changed: list[str] = field(default_factory=list)
    # A credential from before URLs were recorded that nothing trustworthy names a URL for: it is sent nowhere.
    url_unrecorded: bool = False
    mode: str | None = None  # header, bridge, bridge+header; None when no config carries it
    bridges: list[BridgeStatus] = field(default_factory=list)
    last_error: str | None = None
    # The server refuses the stored credential (401 that no renewal cured, 403), seen by a bridge or `chctl check`
    # since the last request that succeeded: its HTTP status (the words are in `last_error`).
    refused: int | None = None
    note: str | None = None  # e.g. a token without a refresh token: when to log in again
    token_reads: int = 0  # credentials handed out by `token.get` (`chctl token`) since the daemon started
    last_token_read_at: float | None = None
    shared: bool = False  # `chctl share`: usable from other machines through the remote socket
    via: str | None = None  # on a remote machine: the forwarded socket that carries it (no credential here)
    login: str | None = None  # an OAuth server's kind of login: browser, client_credentials, idp
    idp: str | None = None  # login `idp`: the identity provider its token is derived from
    fix: str | None = None  # the command that mends a needed login, when it is not `chctl auth NAME`
    # Where the secret rests, each place once: `keychain`, `token_file` (with `path`), `config` (a header-mode
    # config holding it inline, `path`), `secret_file` (the `{file:}` file, `path`); `detail`, `problem`. A
    # confidential client's secret adds its place, `of: client`: `keychain`, or `client_file` (its registration).
    secret_at: list[dict[str, Any]] = field(default_factory=list)
    # Scopes the server refused a call for lack of (403 insufficient_scope): `chctl auth NAME` asks for them.
    scopes_wanted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auth_type": self.auth_type.value}


class StatusBoard:
    """Builds `ServerStatus`es: a read of the stored credential and the server's `ServerState` (phase, last
    error, planned refresh, failed login, config errors, live bridges). What lives elsewhere comes through the
    callables it is built with: `token_reads` (`TokenAccess.reads_of`), `shared` (`SharedStore.load`), `via`
    (`Delegate.via`: the socket that carries a server on a remote machine), `secret_place`, `client_secret_place`
    and `idp_secret_place` (`SecretVault.place`, `.client_place`, `.place_of`: where secret values rest) and
    `idp_waiting` (`IdpService.waiting_for_sign_in`)."""

    def __init__(
        self,
        tokens: TokenStore,
        bindings: BindingStore,
        mcp: MCPService,
        states: ServerStates,
        *,
        token_reads: Callable[[str], TokenReads],
        shared: Callable[[], set[str]],
        via: Callable[[str, list[Binding]], Path | None],
        secret_place: Callable[[str], dict[str, Any] | None],
        client_secret_place: Callable[[str], dict[str, Any] | None],
        idp_waiting: Callable[[str], bool],
        idp_secret_place: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self.tokens = tokens
        self.bindings = bindings
        self.mcp = mcp
        self.states = states
        self.token_reads = token_reads
        self.shared = shared
        self.via = via
        self.secret_place = secret_place  # where a credential's values rest: the keychain or its token file
        # Where a confidential client's secret rests: the keychain or its registration.
        self.client_secret_place = client_secret_place
        # Whether an identity provider has no sign-in to derive tokens from (then that sign-in is the fix).
        self.idp_waiting = idp_waiting
        self.idp_secret_place = idp_secret_place  # where an identity provider's sign-in rests: keychain or IdP file

    def awaiting_login(self) -> list[str]:
        """Bound servers without a credential: whether each expects a login is read from its configs."""
        return [n for n in self.bindings.load() if not self.tokens.path(n).exists()]

    def lookup(self, name: str) -> Result[ServerStatus]:
        """`name`'s status, or NOT_FOUND (with suggestions) for a server nobody knows. Reads configs:
        call it off the event loop."""
        if self.tokens.load(name) is None and self.mcp.known(name) is None and not self.bindings.for_server(name):
            unknown = self.mcp.get_server_info(name)
            assert isinstance(unknown, Failure)
            return unknown
        return Success(self.server(name, expects_login=self.mcp.expects_login(name)))

    def server(self, name: str, *, expects_login: bool, bindings: list[Binding] | None = None) -> ServerStatus:
        """`expects_login`: for a server without a credential, whether it awaits an OAuth login. `bindings`:
        the server's, when the caller has read them already."""
        credential = self.tokens.load(name)
        live = self.states.peek(name) or ServerState(name)
        bindings = self.bindings.for_server(name) if bindings is None else bindings
        reads = self.token_reads(name)
        plan = live.plan
        shared: dict[str, Any] = {
            "name": name,
            "token_reads": reads.count,
            "last_token_read_at": reads.last_at,
            "next_refresh_at": plan.due if plan is not None and plan.refresh else None,
            "configs": [b.path for b in bindings],
            "config_errors": dict(live.config_errors),
            "url_changed": sorted(live.url_changed),
            "mode": _mode(bindings),
            "bridges": [BridgeStatus(bridge_id, **asdict(c)) for bridge_id, c in sorted(live.bridges.items())],
            "shared": name in self.shared(),
            "scopes_wanted": list(live.scopes_wanted),
            "secret_at": self._secret_at(name, bindings, credential),
        }
        if credential is None and (unreadable := _keychain_problem(shared["secret_at"])):
            return ServerStatus(state=SECRET_UNREADABLE, last_error=unreadable, **shared)
        if credential is None:
            return self._without_credential(name, live, bindings, expects_login, shared)
        state_now = live.effective_state(credential)
        tokens = credential.tokens
        expired = tokens is not None and tokens.is_expired(buffer_seconds=0)
        unrecorded = self._unrecorded(credential, bindings)
        last_error = _last_error(live, credential)
        if unrecorded is not None:  # the reason nothing else works
            last_error = f"{unrecorded.error}; {unrecorded.hint}"
        oauth = credential.kind == "oauth"
        return ServerStatus(
            state=state_now.value,
            auth_type=MCPAuthType.OAUTH if oauth else MCPAuthType.API_KEY,
            login=credential.login.value if oauth else None,
            idp=credential.idp,
            fix=self._fix(credential),
            usable=bool(credential.secret)
            and state_now not in (TokenState.NEEDS_REAUTH, TokenState.PENDING_AUTH)
            and not expired
            and unrecorded is None
            and live.refusal is None,
            expires_at=tokens.expires_at if tokens else None,
            has_refresh_token=bool(tokens and tokens.refresh_token),  # (a login without a person renews anyway)
            scopes=tokens.scope.split() if tokens and tokens.scope else credential.scopes,
            issuer=credential.issuer,
            last_error=last_error,
            refused=live.refusal.status if live.refusal is not None else None,
            note=_note(credential, state_now),
            url_unrecorded=unrecorded is not None,
            **shared,
        )

    def _fix(self, credential: Credential) -> str | None:
        """The command that mends a needed login when it is not `chctl auth NAME`: first of all, a sign-in at the
        identity provider the token is derived from."""
        if credential.login is LoginKind.IDP and credential.idp and self.idp_waiting(credential.idp):
            return f"chctl idp login {credential.idp}"
        return credential.fix

    def _without_credential(
        self, name: str, live: ServerState, bindings: list[Binding], expects_login: bool, shared: dict[str, Any]
    ) -> ServerStatus:
        """A server with no credential here: delegated (a remote machine's), awaiting a login or a key, or one
        that needs none — as the registry says, or what `chctl add` recorded of its answer."""
        via = self.via(name, bindings)
        if via is not None:  # a remote machine's server: the laptop holds its credential
            return ServerStatus(state="delegated", via=str(via), **shared)
        auth_type = MCPAuthType.OAUTH if expects_login else MCPAuthType.NONE
        known = self.mcp.known(name)
        wants_key = recorded_auth(bindings) is MCPAuthType.API_KEY
        if not expects_login and (wants_key or (known is not None and known.auth_type is MCPAuthType.API_KEY)):
            auth_type = MCPAuthType.API_KEY
        state = {MCPAuthType.OAUTH: TokenState.PENDING_AUTH.value, MCPAuthType.API_KEY: NEEDS_KEY}.get(auth_type)
        last_error = _last_error(live, None)
        return ServerStatus(state=state or NO_AUTH, auth_type=auth_type, last_error=last_error, **shared)

    def _secret_at(self, name: str, bindings: list[Binding], credential: Credential | None) -> list[dict[str, Any]]:
        """Every place `name`'s secret rests: the store, its client secret's (a confidential client), the sign-in
        at its identity provider its token is derived from, then the configs that hold it inline and the `{file:}`
        secret file (header mode only: a bridge or a headers helper holds none)."""
        place = self.secret_place(name)
        client_place = self.client_secret_place(name)
        others = [{**client_place, "of": "client"}] if client_place is not None else []
        idp = credential.idp if credential is not None and credential.login is LoginKind.IDP else None
        idp_place = self.idp_secret_place(idp) if idp else None
        if idp_place is not None:
            others.append({**idp_place, "of": "idp", "idp": idp})
        if place is None:
            return others
        places = [place, *others]
        for binding in bindings:
            if binding.mode != "header":
                continue
            if binding.secret_mode is SecretMode.FILE:
                secret_file = {"where": "secret_file", "path": str(self.tokens.secret_file(name)), "problem": None}
                if secret_file not in places:
                    places.append(secret_file)
            else:
                places.append({"where": "config", "path": binding.path, "client": binding.client, "problem": None})
        return places

    def _unrecorded(self, credential: Credential, bindings: list[Binding]) -> Failure | None:
        """Why `credential` is sent nowhere, if nothing trustworthy names its URL. Configs are not read here
        (this runs on the event loop): the user's own ones counted when the publisher migrated at start."""
        if credential.server_url:
            return None
        known = self.mcp.known(credential.name)
        found = recorded_urls.plan(credential, bindings, {}, known.url if known is not None else None)
        return recorded_urls.unrecorded(credential.name) if found.credential_url is None else None

    def servers(self, expects_login: dict[str, bool]) -> list[ServerStatus]:
        """Every server that is configured or has a credential, by name; the bindings file is read once."""
        bound = self.bindings.load()
        names = sorted(set(bound) | set(self.tokens.names()))
        return [self.server(n, expects_login=expects_login.get(n, False), bindings=bound.get(n, [])) for n in names]


def refusal_hint(name: str, refused: int, auth_type: MCPAuthType) -> str:
    """What to do about a server that refuses the stored credential (`refused`: its HTTP status)."""
    if refused == HTTPStatus.FORBIDDEN:
        return f"`chctl check {name}` shows what the server wants (a scope: `chctl auth {name} --scope S`)"
    if auth_type is MCPAuthType.API_KEY:
        return f"set the right key: `chctl add {name} -k KEY` (it keeps the key header and mode)"
    return f"run `chctl auth {name}`"


def _last_error(live: ServerState, credential: Credential | None) -> str | None:
    """The refresh's last error, else the server's refusal of the credential, else a failed login, else the
    configs that could not be written."""
    error = (live.error or credential.last_error) if credential else None
    error = error or (live.refusal.message if live.refusal is not None and credential is not None else None)
    error = error or live.failed_login
    return error or ("; ".join(live.config_errors.values()) if live.config_errors else None)


def _note(credential: Credential, state_now: TokenState) -> str | None:
    """A browser login without a refresh token is used until it expires (one without a person asks again)."""
    tokens = credential.tokens
    if tokens is None or tokens.refresh_token or state_now is TokenState.NEEDS_REAUTH:
        return None
    return no_refresh_token_note(credential) if credential.login is LoginKind.BROWSER else None


def _keychain_problem(places: list[dict[str, Any]]) -> str | None:
    """Why the keychain did not give a credential's values (locked, gone), if that is where they rest."""
    return next((p["problem"] for p in places if p["where"] == "keychain" and p["problem"] and "of" not in p), None)


def _mode(bindings: list[Binding]) -> str | None:
    """`bridge`, `header`, `bridge+header` (some configs each way), or None when no config carries it."""
    modes = sorted({b.mode for b in bindings})
    return "+".join(modes) if modes else None
