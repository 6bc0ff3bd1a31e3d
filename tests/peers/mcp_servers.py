"""Pytest plugin: real MCP servers (mcp_server_app.py) as subprocesses, one per session and config.

Fixtures (all session-scoped):
    mcp_api_key_server(header="X-API-Key", key=None) -> McpApiKeyServer   factory; key random if None
    mcp_oauth_server_factory(provider, scopes=..., resource=None) -> McpOAuthServer
    mcp_oauth_server -> McpOAuthServer   introspects at the session's `oidc_provider`

Needs the `tests.peers.oidc` plugin loaded too (for `oidc_provider`).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.peers.oidc import OidcProvider
from tests.peers.peer_process import PeerProcess, start_peer

APP_SCRIPT = Path(__file__).resolve().parent / "mcp_server_app.py"
DEFAULT_SCOPES = ("mcp:read", "mcp:write")


@dataclass
class McpApiKeyServer:
    """An MCP server that wants `header: key` (or `Authorization: Bearer key`) on every request."""

    url: str  # the streamable HTTP endpoint, http://127.0.0.1:<port>/mcp
    header: str
    key: str
    log_path: Path
    _peer: PeerProcess = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """The headers a client must send."""
        value = f"Bearer {self.key}" if self.header.lower() == "authorization" else self.key
        return {self.header: value}

    def __repr__(self) -> str:  # never show the key in assertion output
        return f"McpApiKeyServer(url={self.url!r}, header={self.header!r})"

    def stop(self) -> None:
        self._peer.stop()


@dataclass
class McpOAuthServer:
    """An MCP resource server that accepts only tokens its authorization server says are for it."""

    url: str  # the streamable HTTP endpoint, http://127.0.0.1:<port>/mcp
    resource: str  # the RFC 8707 resource / RFC 9728 `resource`; equals url unless overridden
    issuer: str
    scopes: tuple[str, ...]
    log_path: Path
    _peer: PeerProcess = field(repr=False)

    @property
    def resource_metadata_url(self) -> str:
        base, _, path = self.url.partition("://")[2].partition("/")
        return f"http://{base}/.well-known/oauth-protected-resource/{path}"

    def stop(self) -> None:
        self._peer.stop()


def _start_app(args: list[str], env: dict[str, str], log_path: Path) -> PeerProcess:
    return start_peer([sys.executable, str(APP_SCRIPT), *args], log_path=log_path, env=env)


McpApiKeyServerFactory = Callable[..., McpApiKeyServer]
McpOAuthServerFactory = Callable[..., McpOAuthServer]


@pytest.fixture(scope="session")
def mcp_api_key_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpApiKeyServerFactory]:
    """`mcp_api_key_server(header="X-API-Key", key=None, transport="streamable", require=(), era="both")`: a
    running API-key MCP server, reused per (header, key, transport, require, era). A None key gets a random one,
    reused for the same header. transport="sse" serves the legacy HTTP+SSE transport (url ends in /sse);
    `require`: more (name, value) headers it answers 400 without (a secret or not: the server cannot tell);
    era="legacy" or "modern" serves one protocol era only (mcp_server_app.py's --era)."""
    running: dict[tuple[str, str | None, str, tuple[tuple[str, str], ...], str], McpApiKeyServer] = {}

    def factory(
        header: str = "X-API-Key",
        key: str | None = None,
        transport: str = "streamable",
        require: tuple[tuple[str, str], ...] = (),
        era: str = "both",
    ) -> McpApiKeyServer:
        if (header, key, transport, require, era) not in running:
            # "k" first: a key starting with "-" would read as an option after `chctl add -k`.
            actual_key = key or "k" + secrets.token_urlsafe(24)
            log_path = tmp_path_factory.mktemp("mcp-api-key") / "mcp-server.log"
            args = ["--api-key-header", header, "--transport", transport, "--era", era]
            for name, value in require:
                args += ["--require-header", f"{name}={value}"]
            peer = _start_app(args, {"MCP_PEER_API_KEY": actual_key}, log_path)
            running[(header, key, transport, require, era)] = McpApiKeyServer(
                url=str(peer.ready["url"]), header=header, key=actual_key, log_path=log_path, _peer=peer
            )
        return running[(header, key, transport, require, era)]

    yield factory
    for server in running.values():
        server.stop()


@pytest.fixture(scope="session")
def mcp_oauth_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpOAuthServerFactory]:
    """`mcp_oauth_server_factory(provider, scopes=("mcp:read", "mcp:write"), resource=None)`: an
    MCP resource server introspecting at `provider`, reused per (issuer, scopes, resource)."""
    running: dict[tuple[str, tuple[str, ...], str | None], McpOAuthServer] = {}

    def factory(
        provider: OidcProvider, scopes: tuple[str, ...] = DEFAULT_SCOPES, resource: str | None = None
    ) -> McpOAuthServer:
        cache_key = (provider.issuer, tuple(scopes), resource)
        if cache_key not in running:
            client_id, client_secret = provider.introspection_client
            args = ["--introspect", provider.issuer, "--client-id", client_id, "--scopes", " ".join(scopes)]
            if resource is not None:
                args += ["--resource", resource]
            log_path = tmp_path_factory.mktemp("mcp-oauth") / "mcp-server.log"
            peer = _start_app(args, {"MCP_PEER_CLIENT_SECRET": client_secret}, log_path)
            ready: dict[str, Any] = peer.ready
            running[cache_key] = McpOAuthServer(
                url=str(ready["url"]),
                resource=str(ready["resource"]),
                issuer=provider.issuer,
                scopes=tuple(scopes),
                log_path=log_path,
                _peer=peer,
            )
        return running[cache_key]

    yield factory
    for server in running.values():
        server.stop()


@pytest.fixture(scope="session")
def mcp_oauth_server(mcp_oauth_server_factory: McpOAuthServerFactory, oidc_provider: OidcProvider) -> McpOAuthServer:
    """The session's MCP resource server, bound to the session's `oidc_provider`."""
    return mcp_oauth_server_factory(oidc_provider)
