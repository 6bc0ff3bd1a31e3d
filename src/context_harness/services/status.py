"""One server's status, built in one place for `chctl status`, `chctl doctor`, `chctl auth --status` and the
results of a login or a refresh: what is stored on disk, what is true right now (refreshing, retrying, the
last error), where the server is configured, and the live bridges carrying it (all kept in its `ServerState`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from context_harness.primitives.mcp import MCPAuthType
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services import recorded_urls
from context_harness.services.mcp_service import MCPService
from context_harness.services.refresh_outcomes import no_refresh_token_note
from context_harness.services.server_state import ServerState, ServerStates
from context_harness.services.token_access import TokenReads
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

NO_AUTH = "no_auth"  # the state of a server that needs no credential


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
    note: str | None = None  # e.g. a token without a refresh token: when to log in again
    token_reads: int = 0  # credentials handed out by `token.get` (`chctl token`) since the daemon started
    last_token_read_at: float | None = None
    shared: bool = False  # `chctl share`: usable from other machines through the remote socket
    via: str | None = None  # on a remote machine: the forwarded socket that carries it (no credential here)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auth_type": self.auth_type.value}


class StatusBoard:
    """Builds `ServerStatus`es: a read of the stored credential and the server's `ServerState` (phase, last
    error, planned refresh, failed login, config errors, live bridges). What lives elsewhere comes through the
    callables it is built with: `token_reads` (`TokenAccess.reads_of`), `shared` (`SharedStore.load`) and `via`
    (`Delegate.via`: the socket that carries a server on a remote machine)."""

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
    ) -> None:
        self.tokens = tokens
        self.bindings = bindings
        self.mcp = mcp
        self.states = states
        self.token_reads = token_reads
        self.shared = shared
        self.via = via

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
        }
        if credential is None:
            via = self.via(name, bindings)
            if via is not None:  # a remote machine's server: the laptop holds its credential
                return ServerStatus(state="delegated", via=str(via), **shared)
            auth_type = MCPAuthType.OAUTH if expects_login else MCPAuthType.NONE
            known = self.mcp.known(name)
            if known is not None and known.auth_type is MCPAuthType.API_KEY:
                auth_type = MCPAuthType.API_KEY
            state = TokenState.PENDING_AUTH.value if auth_type is MCPAuthType.OAUTH else NO_AUTH
            return ServerStatus(state=state, auth_type=auth_type, last_error=_last_error(live, None), **shared)
        state_now = live.phase or credential.state
        tokens = credential.tokens
        expired = tokens is not None and tokens.is_expired(buffer_seconds=0)
        note = None
        if tokens is not None and not tokens.refresh_token and state_now is not TokenState.NEEDS_REAUTH:
            note = no_refresh_token_note(credential)
        unrecorded = self._unrecorded(credential, bindings)
        last_error = _last_error(live, credential)
        if unrecorded is not None:  # the reason nothing else works
            last_error = f"{unrecorded.error}; {unrecorded.hint}"
        return ServerStatus(
            state=state_now.value,
            auth_type=MCPAuthType.API_KEY if credential.kind == "api_key" else MCPAuthType.OAUTH,
            usable=bool(credential.secret)
            and state_now not in (TokenState.NEEDS_REAUTH, TokenState.PENDING_AUTH)
            and not expired
            and unrecorded is None,
            expires_at=tokens.expires_at if tokens else None,
            has_refresh_token=bool(tokens and tokens.refresh_token),
            scopes=tokens.scope.split() if tokens and tokens.scope else credential.scopes,
            issuer=credential.issuer,
            last_error=last_error,
            note=note,
            url_unrecorded=unrecorded is not None,
            **shared,
        )

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


def _last_error(live: ServerState, credential: Credential | None) -> str | None:
    """The refresh's last error, else a failed login, else the configs that could not be written."""
    error = (live.last_error or credential.last_error) if credential else None
    error = error or live.failed_login
    return error or ("; ".join(live.config_errors.values()) if live.config_errors else None)


def _mode(bindings: list[Binding]) -> str | None:
    """`bridge`, `header`, `bridge+header` (some configs each way), or None when no config carries it."""
    modes = sorted({b.mode for b in bindings})
    return "+".join(modes) if modes else None
