"""The daemon's parts, built whole and wired in one place (`build_services`), for the daemon and the tests alike.

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

from context_harness.daemon.settings import Settings
from context_harness.net.http_client import HttpClient
from context_harness.net.session import NetworkSettings, new_session
from context_harness.oauth.auth_probe import auth_wanted
from context_harness.primitives.mcp import MCPAuthType
from context_harness.primitives.oauth import TokenEvent, TokenState
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
from context_harness.workers.auth_flows import AuthFlows
from context_harness.workers.bridge import Bridges
from context_harness.workers.carrier import Carrier
from context_harness.workers.check import Checker
from context_harness.workers.delegate import Delegate
from context_harness.workers.notifier import Notifier
from context_harness.workers.refresher import Refresher, ServerRenewals


@dataclass(eq=False)
class Services:
    settings: Settings
    config: ConfigService
    tokens: TokenStore
    vault: SecretVault  # where secret values rest (CH_SECRET_STORE): the keychain or the token files
    bindings: BindingStore
    states: ServerStates  # one record per server; `states.announce(change)` is the one change channel
    publisher: Publisher
    mcp: MCPService
    oauth: OAuthService
    idps: IdpService  # the company identity providers (`chctl idp`) and the sign-in at each
    imports: ImportService
    status: StatusBoard
    token_access: TokenAccess
    shared: SharedStore
    registries: Registries  # `chctl search` and `chctl add NAMESPACE/NAME`
    registry_http: HttpClient  # the registries', apart: a hung registry holds none of the others' connections
    names: ServerNames
    http: HttpClient  # the authorization servers'
    bridge_http: HttpClient  # the bridged servers', apart: a hostile one cannot take the refreshes' connections
    # The workers (`workers/`).
    notifier: Notifier
    refresher: Refresher
    idp_refresher: Refresher  # keeps the IdPs' sign-ins fresh, as `refresher` does the servers' tokens
    flows: AuthFlows
    bridges: Bridges
    carrier: Carrier  # this daemon, or on a remote machine the laptop's: the one place that tells
    checker: Checker
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
        self.carrier.configure(settings.delegate_socket_path)
        self.bridges.configure(settings.rpc_idle_timeout_s)
        self.checker.configure(settings.config_io_timeout_s)
        self.oauth.configure(settings.oauth())
        self.vault.configure(settings.secrets())
        self.publisher.configure(settings.publishing())
        self.refresher.configure(settings.refreshing())
        self.idp_refresher.configure(settings.refreshing())
        self.idps.configure(settings.idp())
        self.notifier.configure(settings.notify_command, settings.event_command)
        self.mcp.reload_registry()

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
    """Every part made whole: the stores and services here, the workers in `_with_workers`, then the change
    channels' listeners."""
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
    network = settings.network()
    http = HttpClient(network)
    # A server added by URL that nothing describes is asked whether it wants a login (`oauth.auth_probe`).
    ask_server = partial(_auth_wanted, http)
    mcp = MCPService(
        config, tokens, bindings, publisher, states, settings.user_registry_file, vault=vault, ask_server=ask_server
    )
    idps = _identity_providers(settings, idp_store, vault, tokens, clients, http)
    # The logins without a person; their timeout is the OAuth service's (made next; a reload changes it).
    machine = MachineLogins(http, idps, lambda: oauth.settings.http_timeout_s)
    oauth = OAuthService(
        settings.oauth(),
        vault=vault,
        clients=clients,
        mcp=mcp,
        publisher=publisher,
        session=http,
        states=states,
        machine=machine,
    )
    imports = ImportService(config, tokens, bindings, publisher, oauth, clients, http)
    services = _with_workers(
        settings, network, config, tokens, vault, bindings, publisher, mcp, oauth, idps, imports, http, clock, rng
    )
    _subscribe(services)
    return services


def _with_workers(
    settings: Settings,
    network: NetworkSettings,
    config: ConfigService,
    tokens: TokenStore,
    vault: SecretVault,
    bindings: BindingStore,
    publisher: Publisher,
    mcp: MCPService,
    oauth: OAuthService,
    idps: IdpService,
    imports: ImportService,
    http: HttpClient,
    clock: Callable[[], float],
    rng: random.Random | None,
) -> Services:
    """The workers, made around the services; and the `Services` that holds them all."""
    states = oauth.states
    token_access = TokenAccess(tokens, oauth, mcp)
    shared = SharedStore(settings.shared_file)
    delegate = Delegate(settings.delegate_socket_path, tokens, bindings)
    status = _status_board(tokens, bindings, mcp, states, token_access, shared, delegate, vault, idps)
    # The bridged servers' pool, apart from the authorization servers', with a limit per server.
    bridge_http = HttpClient(network, partial(new_session, limit=0, limit_per_host=CONNECTIONS_PER_HOST))
    bridges = Bridges(tokens, oauth, bridge_http, states, bindings, settings.rpc_idle_timeout_s)
    flows = AuthFlows(oauth)
    carrier = Carrier(delegate, mcp.names, bridges, flows, status, idps)
    checker = Checker(tokens, bindings, config, mcp, oauth, bridge_http, carrier.unknown, settings.config_io_timeout_s)
    return Services(
        settings=settings,
        config=config,
        tokens=tokens,
        vault=vault,
        bindings=bindings,
        states=states,
        publisher=publisher,
        mcp=mcp,
        oauth=oauth,
        idps=idps,
        imports=imports,
        status=status,
        token_access=token_access,
        shared=shared,
        **_registries(settings, network, mcp),
        names=mcp.names,
        http=http,
        bridge_http=bridge_http,
        notifier=Notifier(settings.notify_command, settings.event_command),
        refresher=Refresher(settings.refreshing(), ServerRenewals(oauth, tokens, bindings), clock=clock, rng=rng),
        idp_refresher=Refresher(settings.refreshing(), idps, clock=clock, rng=rng),
        flows=flows,
        bridges=bridges,
        carrier=carrier,
        checker=checker,
    )


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
    """The change channels' listeners (`server_state.py` tells what each does), awaited in this order."""
    s.states.subscribe(s.publisher.on_change)
    s.states.subscribe(s.refresher.on_change)
    s.states.subscribe(partial(_tell, s.notifier))
    # An IdP changed: its refresher re-plans, people hear (as `idp:NAME`), and a new sign-in gets a token at once
    # for every server that waits for one.
    s.idps.states.subscribe(s.idp_refresher.on_change)
    s.idps.states.subscribe(partial(_tell_idp, s.notifier))
    s.idps.states.subscribe(partial(_derive_waiting, s.oauth, s.idps))


def _status_board(
    tokens: TokenStore,
    bindings: BindingStore,
    mcp: MCPService,
    states: ServerStates,
    token_access: TokenAccess,
    shared: SharedStore,
    delegate: Delegate,
    vault: SecretVault,
    idps: IdpService,
) -> StatusBoard:
    """The status board, with what other parts know: token reads, sharing, delegation, where secrets rest, the
    identity providers waiting for a sign-in."""
    return StatusBoard(
        tokens,
        bindings,
        mcp,
        states,
        token_reads=token_access.reads_of,
        shared=shared.load,
        via=delegate.via,
        secret_place=vault.place,
        client_secret_place=vault.client_place,
        idp_waiting=idps.waiting_for_sign_in,
        idp_secret_place=partial(vault.place_of, idps.store.records),
    )


async def _auth_wanted(http: HttpClient, url: str) -> MCPAuthType | None:
    """What the server at `url` asks for when called without credentials (`oauth.auth_probe`)."""
    return await auth_wanted(http(), url)
