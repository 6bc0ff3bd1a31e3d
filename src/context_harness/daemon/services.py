"""The daemon's parts, built and wired in one place (`build_services`), for the daemon and the tests alike.

RPC handlers get this object and nothing else; a reload hands new settings to `configure`, which passes
each part the few settings it uses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypedDict

import aiohttp

from context_harness.daemon.auth_flows import AuthFlows
from context_harness.daemon.bridge import Bridges
from context_harness.daemon.delegate import Delegate
from context_harness.daemon.notifier import Notifier
from context_harness.daemon.refresher import Refresher, ServerRenewals
from context_harness.daemon.settings import Settings
from context_harness.net.session import NetworkSettings, new_session
from context_harness.oauth.auth_probe import auth_wanted
from context_harness.primitives.oauth import TokenEvent, TokenState
from context_harness.primitives.result import Failure
from context_harness.services.client_vault import ClientVault
from context_harness.services.config_service import ConfigService
from context_harness.services.idp_service import IdpService
from context_harness.services.import_service import ImportService
from context_harness.services.machine_logins import MachineLogins
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService
from context_harness.services.publisher import Publisher
from context_harness.services.registries import MAX_CONCURRENT_REQUESTS, Registries
from context_harness.services.secret_vault import SecretVault
from context_harness.services.server_names import ServerNames
from context_harness.services.server_state import Change, ServerStates
from context_harness.services.status import StatusBoard
from context_harness.services.token_access import TokenAccess
from context_harness.stores.bindings import BindingStore
from context_harness.stores.client_store import ClientStore
from context_harness.stores.idp_store import IdpStore
from context_harness.stores.registry_cache import RegistryCache
from context_harness.stores.shared import SharedStore
from context_harness.stores.token_store import TokenStore
from context_harness.upstream.limits import CONNECTIONS_PER_HOST


class HttpClient:
    """One client session (a connection pool) for outgoing requests, made on first use inside the running loop.

    New network settings (a reload) mean a new session for what starts from then on; the bridges open at the
    time keep the old one (closed at shutdown) until they reconnect."""

    def __init__(
        self, network: NetworkSettings, make: Callable[[NetworkSettings], aiohttp.ClientSession] = new_session
    ) -> None:
        self.network = network
        self._make = make
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._make(self.network)
        return self._session

    def configure(self, network: NetworkSettings) -> None:
        if network == self.network:
            return
        self.network = network
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def close(self) -> None:
        for session in [*self._retired, *([self._session] if self._session else [])]:
            await session.close()


@dataclass(eq=False)
class Services:
    settings: Settings
    config: ConfigService
    tokens: TokenStore
    vault: SecretVault  # where secret values rest (CH_SECRET_STORE): the keychain or the token files
    bindings: BindingStore
    clients: ClientVault  # client registrations (a client secret through the vault)
    states: ServerStates  # one record per server; `states.changed(name)` is the one change channel
    publisher: Publisher
    mcp: MCPService
    oauth: OAuthService
    notifier: Notifier
    refresher: Refresher
    idps: IdpService  # the company identity providers (`chctl idp`) and the sign-in at each
    idp_refresher: Refresher  # keeps their sign-ins fresh, as `refresher` does the servers' tokens
    flows: AuthFlows
    bridges: Bridges
    imports: ImportService
    status: StatusBoard
    http: HttpClient  # the authorization servers'
    bridge_http: HttpClient  # the bridged servers', apart: a hostile one cannot take the refreshes' connections
    token_access: TokenAccess
    shared: SharedStore
    delegate: Delegate  # on a remote machine: the laptop's forwarded socket (`CH_DELEGATE_SOCKET`)
    registries: Registries  # `chctl search` and `chctl add NAMESPACE/NAME`
    registry_http: HttpClient  # the registries', apart: a hung registry holds none of the others' connections
    names: ServerNames
    remote_flows: set[str] = field(default_factory=set)  # logins started through the remote socket
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    started_monotonic: float = field(default_factory=time.monotonic)

    def configure(self, settings: Settings) -> None:
        """Settings changed (SIGHUP): every part that depends on them takes the new ones."""
        self.settings = settings
        self.http.configure(settings.network())
        self.bridge_http.configure(settings.network())
        self.registry_http.configure(settings.network())
        self.registries.configure(settings.registries())
        self.delegate.path = settings.delegate_socket_path
        self.bridges.stall_s = settings.rpc_idle_timeout_s
        self.oauth.configure(settings.oauth())
        self.vault.configure(settings.secrets())
        self.publisher.configure(settings.publishing())
        self.refresher.configure(settings.refreshing())
        self.idp_refresher.configure(settings.refreshing())
        self.idps.configure(settings.idp())
        self.notifier.configure(settings.notify_command, settings.event_command)
        self.mcp.reload_registry()

    def unknown(self, name: str) -> Failure | None:
        """Why `name` is no server of ours (NOT_FOUND, with the closest names); None when it is one. On a remote
        machine a name without a credential here is the laptop's to judge."""
        if self.delegate.via(name) is not None:
            return None
        return self.names.unknown(name)

    async def close(self) -> None:
        """After the RPC server stopped: let hooks finish, close connections."""
        await self.notifier.drain()
        await self.http.close()
        await self.bridge_http.close()
        await self.registry_http.close()


async def _tell(notifier: Notifier, change: Change) -> None:
    if change.event is not None:
        notifier.token_event(change.name, change.event, change.message, person=not change.quiet)


async def _tell_idp(notifier: Notifier, change: Change) -> None:
    if change.event is not None:
        notifier.token_event(f"idp:{change.name}", change.event, change.message)


async def _derive_waiting(oauth: OAuthService, idps: IdpService, change: Change) -> None:
    """A new sign-in at an IdP (`chctl idp login`): the servers that wait for it get a token now."""
    if change.event is not TokenEvent.NEW:
        return
    for name in idps.dependents(change.name):
        credential = oauth.tokens.load(name)
        if credential is not None and (credential.state is not TokenState.ACTIVE or credential.tokens is None):
            await oauth.obtain(name)


def _registry_url(mcp: MCPService, name: str) -> str | None:
    known = mcp.known(name)
    return known.url if known is not None else None


class _RegistryParts(TypedDict):
    registries: Registries
    registry_http: HttpClient


def _registries(settings: Settings, network: NetworkSettings, mcp: MCPService) -> _RegistryParts:
    """The registries' client and its connection pool (no more connections than requests at once)."""

    def session(network: NetworkSettings) -> aiohttp.ClientSession:
        return new_session(network, cookies=False, limit=MAX_CONCURRENT_REQUESTS)

    http = HttpClient(network, session)
    cache = RegistryCache(settings.registry_cache_dir)
    registries = Registries(settings.registries(), cache, http, lambda: mcp.registry.values(), mcp.known_at)
    return {"registries": registries, "registry_http": http}


def build_services(
    settings: Settings, *, clock: Callable[[], float] = time.time, rng: random.Random | None = None
) -> Services:
    config = ConfigService()
    tokens = TokenStore(settings.tokens_dir, settings.secrets_dir)
    client_store = ClientStore(settings.clients_dir)
    idp_store = IdpStore(settings.idps_dir)
    vault = SecretVault(settings.secrets(), tokens, client_store, others=(idp_store.records,))
    clients = ClientVault(client_store, vault)
    bindings = BindingStore(settings.bindings_file)
    # One record per server, and the one channel that says a server changed (its listeners are wired below).
    states = ServerStates()
    # A server's registry URL comes from `mcp` (made next; it reloads the registry on SIGHUP).
    publisher = Publisher(config, tokens, bindings, settings.publishing(), states, lambda n: _registry_url(mcp, n))
    mcp = MCPService(config, tokens, bindings, publisher, states, settings.user_registry_file, vault=vault)
    notifier = Notifier(settings.notify_command, settings.event_command)
    network = settings.network()
    http = HttpClient(network)
    oauth = OAuthService(
        settings.oauth(), vault=vault, clients=clients, mcp=mcp, publisher=publisher, session=http, states=states
    )
    refresher = Refresher(settings.refreshing(), ServerRenewals(oauth, tokens, bindings), clock=clock, rng=rng)
    idps = _identity_providers(settings, idp_store, vault, tokens, clients, http)
    oauth.machine = MachineLogins(http, idps, lambda: oauth.settings.http_timeout_s)
    bridge_http = HttpClient(network, partial(new_session, limit=0, limit_per_host=CONNECTIONS_PER_HOST))
    bridges = Bridges(tokens, oauth, bridge_http, states, bindings)
    bridges.stall_s = settings.rpc_idle_timeout_s
    services = Services(
        settings=settings,
        config=config,
        tokens=tokens,
        vault=vault,
        bindings=bindings,
        clients=clients,
        states=states,
        publisher=publisher,
        mcp=mcp,
        oauth=oauth,
        notifier=notifier,
        refresher=refresher,
        idps=idps,
        idp_refresher=Refresher(settings.refreshing(), idps, clock=clock, rng=rng),
        flows=AuthFlows(oauth),
        bridges=bridges,
        imports=ImportService(config, tokens, bindings, publisher, oauth, clients, http),
        status=StatusBoard(tokens, bindings, mcp, states),
        http=http,
        bridge_http=bridge_http,
        token_access=TokenAccess(tokens, oauth, mcp),
        shared=SharedStore(settings.shared_file),
        delegate=Delegate(settings.delegate_socket_path, tokens, bindings),
        **_registries(settings, network, mcp),
        names=mcp.names,
    )
    bridges.delegate = services.delegate
    mcp.ask_server = lambda url: auth_wanted(http(), url)  # a server added by URL: does it want a login?
    _subscribe(services)
    _tell_status(services)
    return services


def _identity_providers(
    settings: Settings, store: IdpStore, vault: SecretVault, tokens: TokenStore, clients: ClientVault, http: HttpClient
) -> IdpService:
    """The identity providers: their own records, and their own change channel (a sign-in that needs a person is
    told once, not once per server)."""
    states = ServerStates()
    return IdpService(
        settings.idp(), store=store, vault=vault, tokens=tokens, clients=clients, session=http, states=states
    )


def _subscribe(s: Services) -> None:
    """The change channel's listeners ("this server changed"), awaited in this order: the publisher writes a
    new credential into the configs, the refresher re-plans from the state, the notifier and event hook hear the
    event. Nobody else publishes after a change (`repair_configs` mends, logout's `Publisher.forget` takes the
    header out)."""
    s.states.subscribe(s.publisher.on_change)
    s.states.subscribe(s.refresher.on_change)
    s.states.subscribe(partial(_tell, s.notifier))
    # An IdP changed: its refresher re-plans, people hear (as `idp:NAME`), and a new sign-in gets a token at once
    # for every server that waits for one.
    s.idps.states.subscribe(s.idp_refresher.on_change)
    s.idps.states.subscribe(partial(_tell_idp, s.notifier))
    s.idps.states.subscribe(partial(_derive_waiting, s.oauth, s.idps))


def _tell_status(s: Services) -> None:
    """What the status board shows that other parts know: token reads, sharing, delegation, where secrets rest."""
    s.status.token_reads = s.token_access.reads_of
    s.status.shared = s.shared.load
    s.status.via = s.delegate.via
    s.status.secret_place = s.vault.place
    s.status.client_secret_place = s.vault.client_place
    s.status.idp_waiting = s.idps.waiting_for_sign_in
    s.status.idp_secret_place = partial(s.vault.place_of, s.idps.store.records)
