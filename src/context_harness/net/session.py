"""The one place the daemon's aiohttp sessions are made: every request goes through the proxy the variables
name for its URL, verifies certificates with `tls.client_context`, and fails with words from `failures`.

It is also where a credential meets a proxy, whoever sends it (the bridge, `chctl check`, a login's code
exchange, a refresh, a revocation, doctor's probe): a request to plain `http://` that a proxy would carry is
refused before anything leaves when it holds anything but the protocol's own headers — an `Authorization`
header, an API key's header, a cookie, an OAuth form (codes, refresh tokens, client secrets). Loopback is never
proxied (`proxies`), so this only stands behind the rule that keeps credentials off plain http elsewhere.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from http import HTTPStatus

import aiohttp
from yarl import URL

from context_harness.net import failures
from context_harness.net.ca_bundle import CaBundle
from context_harness.net.proxies import Proxy, ProxyVariables
from context_harness.net.tls import client_context

# Node (oidc-provider, many MCP servers) closes idle keep-alive connections after 5 s; aiohttp keeps
# them 15 s by default, so a pooled connection can be closed under us. Stay below Node's figure.
KEEPALIVE_S = 4.0
# What a request to plain http may show a proxy: the headers of HTTP and MCP themselves, none of them secret (MCP's
# by name: the version, the session, the method and name a request routes by; an API key's header may be called
# anything, `Mcp-Api-Key` too, so no prefix is trusted). A header not listed counts as a credential.
PUBLIC_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "cache-control",
        "connection",
        "content-length",
        "content-type",
        "host",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "mcp-protocol-version",
        "mcp-session-id",
        "user-agent",
    }
)
PROXY_AUTH_REQUIRED = HTTPStatus.PROXY_AUTHENTICATION_REQUIRED  # 407: only a proxy says it
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")  # OAuth's token and revocation requests


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """The proxy variables in force and the extra CA certificates (`CH_CA_BUNDLE`, as read)."""

    proxies: ProxyVariables = field(default_factory=lambda: ProxyVariables({}))
    ca_bundle: CaBundle | None = None


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


def carries_credential(req: aiohttp.ClientRequest) -> bool:
    """Whether `req` holds anything a proxy must not read: a header that is not the protocol's own, or a form."""
    if any(name.lower() not in PUBLIC_HEADERS for name in req.headers):
        return True
    return req.headers.get("Content-Type", "").lower().startswith(FORM_TYPES)


def _through_network(proxies: ProxyVariables) -> aiohttp.ClientMiddlewareType:
    async def middleware(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        proxy = proxies.for_url(str(req.url))
        if proxy is not None:
            _use(req, proxy)
        try:
            response = await handler(req)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise failures.ReachFailure(failures.certificate_failure(exc, proxy), "certificate") from None
        except (aiohttp.ClientHttpProxyError, aiohttp.ClientProxyConnectionError) as exc:
            assert proxy is not None
            raise failures.ReachFailure(failures.proxy_failure(exc, proxy, req.url.host or "?"), "proxy") from None
        if proxy is not None and req.url.scheme == "http" and response.status == PROXY_AUTH_REQUIRED:
            response.release()  # plain http has no CONNECT: the proxy's refusal comes back as the answer itself
            raise failures.ReachFailure(failures.proxy_wants_credentials(proxy), "proxy")
        return response

    return middleware


def _use(req: aiohttp.ClientRequest, proxy: Proxy) -> None:
    """Send `req` through `proxy`, or refuse (ReachFailure, nothing sent) when it cannot or must not go there."""
    if not proxy.supported:
        raise failures.ReachFailure(failures.unsupported_proxy(proxy), "proxy")
    if req.url.scheme == "http" and carries_credential(req):
        raise failures.ReachFailure(failures.cleartext_through_proxy(proxy, req.url.host or "?"), "proxy")
    req.update_proxy(URL(proxy.url), None, None)
