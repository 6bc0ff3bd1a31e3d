"""Pytest plugin: a real oidc-provider authorization server per session (see oidc_server.mjs).

Fixtures (both session-scoped):
    oidc_provider_factory(**OidcConfig fields) -> OidcProvider   one process per distinct config
    oidc_provider -> OidcProvider                               the default config (1 h tokens)

Any resource indicator starting with "http://127.0.0.1:" is accepted, so MCP servers on random
ports need not be known before the provider starts; the access token's audience is that resource.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.peers.peer_process import PeerProcess, start_peer

PEERS_DIR = Path(__file__).resolve().parent
SERVER_SCRIPT = PEERS_DIR / "oidc_server.mjs"
PUBLIC_CLIENT_ID = "ch-native-client"
INTROSPECTION_CLIENT_ID = "mcp-resource-server"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True)
class OidcConfig:
    """The provider's knobs; each distinct value starts its own provider process."""

    access_token_ttl: int = 3600
    refresh_token_ttl: int = 14 * 24 * 3600
    rotate_refresh_token: bool = True  # reuse of a rotated refresh token also revokes the grant
    always_issue_refresh_token: bool = False  # True: refresh tokens even without offline_access
    registration: bool = True  # open dynamic client registration
    # False: offline_access alone yields a refresh token; True: stock oidc-provider, which drops
    # offline_access (so no refresh token) unless the request also says prompt=consent.
    offline_access_needs_prompt_consent: bool = False
    resource_prefix: str = "http://127.0.0.1:"
    resources: tuple[str, ...] | None = None  # exact allow-list instead of the prefix
    resource_scopes: tuple[str, ...] = ("mcp:read", "mcp:write")
    extra_clients: tuple[str, ...] = field(default=())  # JSON-encoded client metadata objects
    # True: a client of extra_clients that sends its secret another way than registered is invalid_client
    strict_client_auth_method: bool = False
    token_delay_ms: int = 0  # the token endpoint answers this much later: a refresh stays in flight a while
    tls_cert: str | None = None  # PEM files: serve HTTPS (the issuer is then https://)
    tls_key: str | None = None
    client_credentials: bool = False  # the client credentials grant, for extra_clients that list it
    id_token_ttl: int = 3600
    registration_management: bool = False  # RFC 7592: DELETE /reg/<id> removes a registered client
    # A company identity provider too: RFC 8693 exchange of its ID tokens for ID-JAGs (see oidc_server.mjs).
    token_exchange: bool = False
    id_jag_client_id: str | None = None  # the client_id an ID-JAG names (default: the requesting client's)
    issuer_host: str = "127.0.0.1"  # a CH_TEST_HOSTS name: the issuer is reached by that name (through a proxy)

    def to_json(self, introspection_secret: str) -> str:
        return json.dumps(
            {
                "accessTokenTTL": self.access_token_ttl,
                "refreshTokenTTL": self.refresh_token_ttl,
                "rotateRefreshToken": self.rotate_refresh_token,
                "alwaysIssueRefreshToken": self.always_issue_refresh_token,
                "registration": self.registration,
                "offlineAccessNeedsPromptConsent": self.offline_access_needs_prompt_consent,
                "tokenDelayMs": self.token_delay_ms,
                "resourcePrefix": self.resource_prefix,
                "resources": list(self.resources) if self.resources is not None else None,
                "resourceScopes": list(self.resource_scopes),
                "extraClients": [json.loads(client) for client in self.extra_clients],
                "strictClientAuthMethod": self.strict_client_auth_method,
                "publicClientId": PUBLIC_CLIENT_ID,
                "introspectionClientId": INTROSPECTION_CLIENT_ID,
                "introspectionClientSecret": introspection_secret,
                "tlsCert": self.tls_cert,
                "tlsKey": self.tls_key,
                "clientCredentials": self.client_credentials,
                "idTokenTTL": self.id_token_ttl,
                "registrationManagement": self.registration_management,
                "tokenExchange": self.token_exchange,
                "idJagClientId": self.id_jag_client_id,
                "issuerHost": self.issuer_host,
            }
        )


def _http() -> aiohttp.ClientSession:
    # force_close: Node drops idle keep-alive connections after 5 s; a fresh connection per request
    # spares every helper a retry on a half-closed socket.
    return aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(force_close=True))


@dataclass
class OidcProvider:
    """A running oidc-provider: where it is, its pre-registered clients, and admin helpers."""

    issuer: str
    port: int
    config: OidcConfig
    public_client_id: str
    # (client_id, client_secret) of the confidential client; repr=False keeps the secret out of test output
    introspection_client: tuple[str, str] = dataclasses.field(repr=False)
    log_path: Path = dataclasses.field(repr=False)
    _peer: PeerProcess = dataclasses.field(repr=False)

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/oauth-authorization-server"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/token/revocation"

    @property
    def registration_endpoint(self) -> str:
        return f"{self.issuer}/reg"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(*self.introspection_client)}

    async def metadata(self) -> dict[str, Any]:
        """The RFC 8414 authorization-server metadata document."""
        async with _http() as http, http.get(self.metadata_url) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def introspect(self, token: str, token_type_hint: str | None = None) -> dict[str, Any]:
        """RFC 7662 introspection as the resource server sees it: {"active": bool, "aud", "exp", ...}."""
        form = {"token": token} | ({"token_type_hint": token_type_hint} if token_type_hint else {})
        async with _http() as http, http.post(self.introspection_endpoint, data=form, headers=self._auth()) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def is_active(self, token: str) -> bool:
        return bool((await self.introspect(token)).get("active"))

    async def revoke(self, token: str, token_type_hint: str | None = None) -> None:
        """RFC 7009 revocation by the confidential client. Revoking a refresh token revokes its grant:
        the way to make the next refresh fail with invalid_grant (the user withdrew access)."""
        form = {"token": token} | ({"token_type_hint": token_type_hint} if token_type_hint else {})
        async with _http() as http, http.post(self.revocation_endpoint, data=form, headers=self._auth()) as response:
            response.raise_for_status()

    def stop(self) -> None:
        self._peer.stop()


def start_oidc_provider(config: OidcConfig, log_path: Path) -> OidcProvider:
    """Start one provider process and wait for its ready line."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    secret = secrets.token_urlsafe(32)
    # The config travels in the environment: it carries the client secret, which argv would expose.
    peer = start_peer(
        [node, str(SERVER_SCRIPT)],
        log_path=log_path,
        env={"OIDC_PEER_CONFIG": config.to_json(secret)},
        cwd=PEERS_DIR,
    )
    return OidcProvider(
        issuer=str(peer.ready["issuer"]),
        port=int(peer.ready["port"]),
        config=config,
        public_client_id=PUBLIC_CLIENT_ID,
        introspection_client=(INTROSPECTION_CLIENT_ID, secret),
        log_path=log_path,
        _peer=peer,
    )


OidcProviderFactory = Callable[..., OidcProvider]


@pytest.fixture(scope="session")
def oidc_provider_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviderFactory]:
    """`oidc_provider_factory(access_token_ttl=3, ...)`: a provider for that config, one per session."""
    running: dict[OidcConfig, OidcProvider] = {}

    def factory(**overrides: Any) -> OidcProvider:
        config = OidcConfig(**overrides)
        if config not in running:
            log_dir = tmp_path_factory.mktemp("oidc-provider")
            running[config] = start_oidc_provider(config, log_dir / "oidc-provider.log")
        return running[config]

    yield factory
    for provider in running.values():
        provider.stop()


@pytest.fixture(scope="session")
def oidc_provider(oidc_provider_factory: OidcProviderFactory) -> OidcProvider:
    """The session's default provider: 1 h access tokens, rotating refresh tokens, open registration."""
    return oidc_provider_factory()
