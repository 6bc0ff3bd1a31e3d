"""The one place the daemon's aiohttp sessions are made: every request goes through the proxy the variables
name for its URL, verifies certificates with `tls.client_context`, and fails with words from `failures`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from context_harness.net import failures
from context_harness.net.proxies import ProxyVariables
from context_harness.net.tls import client_context

# Node (oidc-provider, many MCP servers) closes idle keep-alive connections after 5 s; aiohttp keeps
# them 15 s by default, so a pooled connection can be closed under us. Stay below Node's figure.
KEEPALIVE_S = 4.0


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """The proxy variables in force and the extra CA certificates (`CH_CA_BUNDLE`)."""

    proxies: ProxyVariables = field(default_factory=lambda: ProxyVariables({}))
    ca_bundle: Path | None = None


_settings_of: weakref.WeakKeyDictionary[aiohttp.ClientSession, NetworkSettings] = weakref.WeakKeyDictionary()


def new_session(
    network: NetworkSettings | None = None, *, cookies: bool = True, limit: int = 100, limit_per_host: int = 0
) -> aiohttp.ClientSession:
    """A client session for `network` whose pooled connections are dropped before a Node server drops them;
    `limit` and `limit_per_host` bound its pool as aiohttp's connector does (0: no bound)."""
    network = network or NetworkSettings()
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        keepalive_timeout=KEEPALIVE_S,
        ssl=client_context(network.ca_bundle),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=None if cookies else aiohttp.DummyCookieJar(),
        middlewares=(_through_network(network.proxies),),
    )
    _settings_of[session] = network
    return session


def cookieless_like(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """A session with `session`'s network settings and no cookie jar (to ask as a stranger would)."""
    return new_session(_settings_of.get(session), cookies=False)


def _through_network(proxies: ProxyVariables) -> aiohttp.ClientMiddlewareType:
    async def middleware(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        proxy = proxies.for_url(str(req.url))
        if proxy is not None:
            if not proxy.supported:
                raise failures.ReachFailure(failures.unsupported_proxy(proxy), "proxy")
            req.update_proxy(URL(proxy.url), None, None)
        try:
            return await handler(req)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise failures.ReachFailure(failures.certificate_failure(exc, proxy), "certificate") from None
        except (aiohttp.ClientHttpProxyError, aiohttp.ClientProxyConnectionError) as exc:
            assert proxy is not None
            raise failures.ReachFailure(failures.proxy_failure(exc, proxy, req.url.host or "?"), "proxy") from None

    return middleware
