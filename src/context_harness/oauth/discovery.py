"""Finding who issues tokens for an MCP server: RFC 9728, RFC 8414 / OIDC discovery, MCP 2026-07-28, and the
servers of the 2025-03-26 revision, which publish no protected-resource metadata: their own origin is the
authorization server, with RFC 8414 metadata there or else the default endpoints `/authorize`, `/token` and
`/register`.

Pure functions parse headers, build well-known URLs and validate documents; `discover` is the thin
I/O layer that strings them together.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog

from context_harness import __version__
from context_harness.oauth import http
from context_harness.oauth.challenge import BearerChallenge, parse_www_authenticate
from context_harness.primitives.outside_values import USER_INFO_PROBLEM, describe_url, has_user_info, is_secure_endpoint
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

log = structlog.get_logger(__name__)

PROTECTED_RESOURCE_WELL_KNOWN = "/.well-known/oauth-protected-resource"
OAUTH_AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
OFFLINE_ACCESS = "offline_access"
MCP_PROTOCOL_VERSION = "2025-11-25"

# --- URLs ------------------------------------------------------------------------------------------


def canonical_resource(server_url: str) -> str:
    """The server's canonical URI (MCP authorization spec, RFC 8707 §2).

    Lowercase scheme and host, no fragment, no trailing slash (the spec's preferred form: a bare
    origin is `https://host`, `/mcp/` is `/mcp`); the path, port and query are kept.
    """
    parts = urlsplit(server_url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def resource_matches(document_resource: str, server_url: str) -> bool:
    """Whether a protected-resource document may speak for `server_url`.

    Equal canonical URIs match; so does a document for a parent path on the same origin (the MCP
    SDKs accept `https://host` for `https://host/mcp`). Anything else is a mix-up or an attack.
    """
    ours, theirs = urlsplit(canonical_resource(server_url)), urlsplit(canonical_resource(document_resource))
    if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
        return False
    if theirs.query and theirs.query != ours.query:
        return False
    return (ours.path + "/").startswith(theirs.path + "/")


def protected_resource_metadata_urls(server_url: str) -> list[str]:
    """RFC 9728 §3.1 well-known URLs in the MCP spec's order: path-inserted first, then the root."""
    parts = urlsplit(canonical_resource(server_url))
    root = urlunsplit((parts.scheme, parts.netloc, PROTECTED_RESOURCE_WELL_KNOWN, "", ""))
    if not parts.path and not parts.query:
        return [root]
    inserted = urlunsplit((parts.scheme, parts.netloc, PROTECTED_RESOURCE_WELL_KNOWN + parts.path, parts.query, ""))
    return [inserted, root]


def authorization_server_metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 §3.1 and OIDC Discovery URLs, in the MCP spec's order.

    Issuer with a path: OAuth path-inserted, OIDC path-inserted, OIDC path-appended.
    Issuer without: OAuth, then OIDC.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")

    def at(p: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, p, "", ""))

    if not path:
        return [at(OAUTH_AS_WELL_KNOWN), at(OIDC_WELL_KNOWN)]
    return [at(OAUTH_AS_WELL_KNOWN + path), at(OIDC_WELL_KNOWN + path), at(path + OIDC_WELL_KNOWN)]


def issuers_match(a: str, b: str) -> bool:
    """RFC 8414 §3.3 simple string comparison, except that `https://host` and `https://host/` are one
    issuer (the MCP Python SDK's servers list their authorization server with the slash)."""
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    parts = urlsplit(shorter)
    return longer == shorter + "/" and shorter == f"{parts.scheme}://{parts.netloc}"


def is_local_host(url: str) -> bool:
    """Whether `url` points at this machine or its link (loopback, link-local such as the cloud metadata
    address 169.254.169.254, unspecified), also in the spellings getaddrinfo accepts (`127.1`, `0x7f.1`)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified


def endpoint_allowed(url: str, server_url: str) -> bool:
    """A metadata URL the daemon may call for `server_url`: secure, and local only if the server is too
    (else a remote server's metadata could make the daemon probe or post to the user's own machine)."""
    return is_secure_endpoint(url) and (is_local_host(server_url) or not is_local_host(url))


def local_endpoints(server_url: str, auth_server: AuthServerMetadata) -> list[str]:
    """The names of the authorization server's endpoints that `endpoint_allowed` refuses."""
    endpoints = {
        "issuer": auth_server.issuer,
        "token_endpoint": auth_server.token_endpoint,
        "registration_endpoint": auth_server.registration_endpoint,
        "revocation_endpoint": auth_server.revocation_endpoint,
        "introspection_endpoint": auth_server.introspection_endpoint,
    }
    return [name for name, url in endpoints.items() if url is not None and not endpoint_allowed(url, server_url)]


# --- documents -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """The fields of an RFC 9728 protected-resource document that we use."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AuthServerMetadata:
    """The fields of an RFC 8414 / OIDC discovery document that we use."""

    issuer: str
    authorization_endpoint: str  # empty for a server that offers no browser login (validated with browser=False)
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    scopes_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False


def _string_list(doc: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if not isinstance(value, list):
        return None
    return tuple(item for item in value if isinstance(item, str))


def _optional_url(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) and is_secure_endpoint(value) else None


def validate_resource_metadata(doc: Any, server_url: str) -> Result[ResourceMetadata]:
    """Check a protected-resource document: it must name this server and an authorization server."""
    if not isinstance(doc, dict):
        return Failure("protected resource metadata is not a JSON object", ErrorCode.OAUTH_ERROR)
    resource = doc.get("resource")
    if not isinstance(resource, str) or not resource:
        return Failure("protected resource metadata has no `resource`", ErrorCode.OAUTH_ERROR)
    if not resource_matches(resource, server_url):
        return Failure(
            f"protected resource metadata is for {resource!r}, not {canonical_resource(server_url)!r}",
            ErrorCode.OAUTH_ERROR,
            "check the server URL; the server may be misconfigured or impersonated",
        )
    servers = _string_list(doc, "authorization_servers") or ()
    servers = tuple(s for s in servers if is_secure_endpoint(s))
    if not servers:
        return Failure(
            "protected resource metadata lists no usable authorization server",
            ErrorCode.OAUTH_ERROR,
            "the server does not say where to log in; it may need an API key instead",
        )
    return Success(ResourceMetadata(resource, servers, _string_list(doc, "scopes_supported")))


def validate_authorization_server_metadata(
    doc: Any, issuer: str, *, issuer_on_origin: bool = False, browser: bool = True
) -> Result[AuthServerMetadata]:
    """Check an authorization-server document against the issuer we derived its URL from. `issuer_on_origin`:
    the URL was derived from an origin (2025-03-26), and any issuer on that origin may publish there. `browser`:
    for a login in the browser, which needs an authorization endpoint and PKCE S256; the grants without a person
    need the token endpoint only."""
    if not isinstance(doc, dict):
        return Failure("authorization server metadata is not a JSON object", ErrorCode.OAUTH_ERROR)
    doc_issuer = doc.get("issuer")
    matches = isinstance(doc_issuer, str) and (
        issuers_match(doc_issuer, issuer) or (issuer_on_origin and origin_of(doc_issuer) == origin_of(issuer))
    )
    if not isinstance(doc_issuer, str) or not matches:
        return Failure(
            f"authorization server metadata names issuer {doc_issuer!r}, expected {issuer!r}",
            ErrorCode.OAUTH_ERROR,
            "the authorization server is misconfigured or impersonated; not continuing",
        )
    endpoints: dict[str, str] = {"authorization_endpoint": ""}
    for key in ("authorization_endpoint", "token_endpoint") if browser else ("token_endpoint",):
        value = doc.get(key)
        if not isinstance(value, str) or not is_secure_endpoint(value):
            return Failure(
                f"authorization server metadata has no usable {key} (https, or http on loopback)",
                ErrorCode.OAUTH_ERROR,
                "the authorization server's metadata is incomplete or insecure; not continuing",
            )
        endpoints[key] = value
    methods = _string_list(doc, "code_challenge_methods_supported") or ()
    if browser and "S256" not in methods:
        return Failure(
            f"authorization server {doc_issuer} does not advertise PKCE S256",
            ErrorCode.OAUTH_ERROR,
            "the MCP spec requires PKCE with S256; ask the server's operators to enable it",
        )
    return Success(
        AuthServerMetadata(
            issuer=doc_issuer,
            authorization_endpoint=endpoints["authorization_endpoint"],
            token_endpoint=endpoints["token_endpoint"],
            registration_endpoint=_optional_url(doc, "registration_endpoint"),
            revocation_endpoint=_optional_url(doc, "revocation_endpoint"),
            introspection_endpoint=_optional_url(doc, "introspection_endpoint"),
            scopes_supported=_string_list(doc, "scopes_supported"),
            token_endpoint_auth_methods_supported=_string_list(doc, "token_endpoint_auth_methods_supported"),
            authorization_response_iss_parameter_supported=(
                doc.get("authorization_response_iss_parameter_supported") is True
            ),
            client_id_metadata_document_supported=doc.get("client_id_metadata_document_supported") is True,
        )
    )


def choose_scopes(
    challenge_scope: str | None,
    resource_scopes_supported: Sequence[str] | None,
    as_scopes_supported: Sequence[str] | None,
    requested: Sequence[str] | None = None,
) -> list[str]:
    """Scopes to ask for: the caller's, else the 401 challenge's, else the resource's `scopes_supported`.

    `offline_access` is added when the authorization server lists it, since without a refresh token
    there is nothing for the daemon to keep fresh. No scopes at all stays empty (the server's default).
    """
    if requested:
        chosen = list(requested)
    elif challenge_scope and challenge_scope.split():
        chosen = challenge_scope.split()
    elif resource_scopes_supported:
        chosen = list(resource_scopes_supported)
    else:
        return []
    if as_scopes_supported and OFFLINE_ACCESS in as_scopes_supported and OFFLINE_ACCESS not in chosen:
        chosen.append(OFFLINE_ACCESS)
    return list(dict.fromkeys(chosen))


# --- I/O -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discovery:
    """Everything discovery learned about one MCP server."""

    server_url: str
    # The RFC 8707 `resource` for authorization and token requests: the document's own spelling
    # (it is what the resource server checks the audience against).
    resource: str
    resource_metadata: ResourceMetadata
    auth_server: AuthServerMetadata
    challenge: BearerChallenge | None = None
    # The 2025-03-26 default endpoints, assumed because the server published no metadata at all.
    default_endpoints: bool = False

    def scopes(self, requested: Sequence[str] | None = None) -> list[str]:
        return choose_scopes(
            self.challenge.scope if self.challenge else None,
            self.resource_metadata.scopes_supported,
            self.auth_server.scopes_supported,
            requested,
        )


def initialize_request() -> dict[str, Any]:
    """An MCP `initialize` call: what any client sends first, so a protected server answers 401."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "context-harness", "version": __version__},
        },
    }


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """How the server answered a call without credentials."""

    challenge: BearerChallenge | None  # the Bearer challenge of a 401/403
    # A 401 that is a Bearer challenge or none at all (not Basic, say): an OAuth server of any revision.
    wants_bearer: bool = False


async def initialize_without_credentials(
    session: aiohttp.ClientSession, server_url: str, timeout_s: float = http.DEFAULT_TIMEOUT_S
) -> Result[http.HttpResponse]:
    """An MCP `initialize` sent with no credential, as any client's first request: what a server asks for."""
    return await http.request(
        session,
        "POST",
        server_url,
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MCP_PROTOCOL_VERSION},
        json_body=initialize_request(),
        timeout_s=timeout_s,
    )


async def probe_challenge(
    session: aiohttp.ClientSession, server_url: str, timeout_s: float = http.DEFAULT_TIMEOUT_S
) -> Result[ProbeAnswer]:
    """Call the server without credentials: its Bearer challenge, and whether it asks for a bearer token."""
    sent = await initialize_without_credentials(session, server_url, timeout_s)
    if isinstance(sent, Failure):
        return sent
    if sent.value.status not in (401, 403):
        log.info("probe_not_challenged", url=describe_url(server_url), status=sent.value.status)
        return Success(ProbeAnswer(None))
    header = sent.value.headers.get("WWW-Authenticate")
    challenge = parse_www_authenticate(header)
    return Success(ProbeAnswer(challenge, sent.value.status == 401 and (challenge is not None or not header)))


async def fetch_resource_metadata(
    session: aiohttp.ClientSession,
    server_url: str,
    challenge: BearerChallenge | None,
    timeout_s: float = http.DEFAULT_TIMEOUT_S,
) -> Result[ResourceMetadata | None]:
    """The challenge's `resource_metadata` URL first, then the well-known URLs; a 4xx means try the next.
    None: the server publishes none (a server of the 2025-03-26 revision, or no OAuth server at all)."""
    found = await _first_document(
        session, resource_metadata_urls(server_url, challenge), timeout_s, missed_event="resource_metadata_missed"
    )
    if isinstance(found, Failure):
        return found
    if found.value is None:
        return Success(None)
    validated = validate_resource_metadata(found.value.doc, server_url)
    return validated if isinstance(validated, Failure) else Success(validated.value)


def resource_metadata_urls(server_url: str, challenge: BearerChallenge | None) -> list[str]:
    urls = protected_resource_metadata_urls(server_url)
    if challenge and challenge.resource_metadata and endpoint_allowed(challenge.resource_metadata, server_url):
        urls.insert(0, challenge.resource_metadata)
    return list(dict.fromkeys(urls))


def _tried(urls: list[str]) -> str:
    """The URLs looked at, in order, for the error: a server publishing elsewhere is then easy to spot."""
    return ", ".join(describe_url(u) for u in dict.fromkeys(urls))


@dataclass(frozen=True, slots=True)
class _Found:
    doc: Any


async def _first_document(
    session: aiohttp.ClientSession, urls: list[str], timeout_s: float, *, missed_event: str
) -> Result[_Found | None]:
    """The body of the first response with status 200 (URLs in order), or None when none answers 200.

    A transport failure stops the search: a server we cannot reach is not a server without metadata.
    """
    for url in urls:
        got = await http.request(session, "GET", url, headers=http.JSON_ACCEPT, timeout_s=timeout_s)
        if isinstance(got, Failure):
            return got
        if got.value.status == 200:
            return Success(_Found(got.value.json()))
        log.info(missed_event, url=describe_url(url), status=got.value.status)
    return Success(None)


async def fetch_authorization_server_metadata(
    session: aiohttp.ClientSession, issuer: str, timeout_s: float = http.DEFAULT_TIMEOUT_S, *, browser: bool = True
) -> Result[AuthServerMetadata]:
    urls = authorization_server_metadata_urls(issuer)
    found = await _first_document(session, urls, timeout_s, missed_event="auth_server_metadata_missed")
    if isinstance(found, Failure):
        return found
    if found.value is None:
        return Failure(
            f"no authorization server metadata found for issuer {issuer} (tried {_tried(urls)})",
            ErrorCode.OAUTH_ERROR,
            "the authorization server publishes neither RFC 8414 nor OpenID discovery metadata",
        )
    return validate_authorization_server_metadata(found.value.doc, issuer, browser=browser)


async def discover(
    session: aiohttp.ClientSession, server_url: str, timeout_s: float = http.DEFAULT_TIMEOUT_S, *, browser: bool = True
) -> Result[Discovery]:
    """Resource metadata, then authorization-server metadata: the first steps of a login (docs/design.md).
    A server that publishes no resource metadata but asks for a bearer token is of the 2025-03-26 revision.
    `browser`: see `validate_authorization_server_metadata`."""
    if not is_secure_endpoint(server_url):
        return Failure(
            f"refusing OAuth for {describe_url(server_url)}: its bearer token would travel in clear text "
            "(RFC 6750 §5.3)",
            ErrorCode.OAUTH_ERROR,
            "use the server's https:// URL (plain http is accepted on loopback only)",
        )
    probed = await probe_challenge(session, server_url, timeout_s)
    if isinstance(probed, Failure):
        return probed
    challenge = probed.value.challenge
    resource = await fetch_resource_metadata(session, server_url, challenge, timeout_s)
    if isinstance(resource, Failure):
        return resource
    if resource.value is None:
        if probed.value.wants_bearer:
            return await discover_at_origin(session, server_url, challenge, timeout_s, browser=browser)
        return Failure(
            f"{describe_url(server_url)} publishes no OAuth protected resource metadata "
            f"(tried {_tried(resource_metadata_urls(server_url, challenge))}) and does not ask for a bearer token",
            ErrorCode.OAUTH_ERROR,
            "the server may not use OAuth; add it with an API key, or check the URL",
        )
    issuers = [s for s in resource.value.authorization_servers if endpoint_allowed(s, server_url)]
    if not issuers:
        return Failure(
            "the remote server's metadata points at an authorization server on this machine or its link",
            ErrorCode.OAUTH_ERROR,
            "the server is misconfigured or hostile; not continuing",
        )
    auth_server = await fetch_authorization_server_metadata(session, issuers[0], timeout_s, browser=browser)
    if isinstance(auth_server, Failure):
        return auth_server
    return _discovered(server_url, resource.value.resource, resource.value, auth_server.value, challenge)


def _discovered(
    server_url: str,
    resource: str,
    resource_metadata: ResourceMetadata,
    auth_server: AuthServerMetadata,
    challenge: BearerChallenge | None,
    *,
    assumed: bool = False,
) -> Result[Discovery]:
    local = local_endpoints(server_url, auth_server)
    if local:
        return Failure(
            f"the remote server's authorization metadata points {', '.join(local)} at this machine or its link",
            ErrorCode.OAUTH_ERROR,
            "the server is misconfigured or hostile; not continuing",
        )
    log.info(
        "discovery_completed",
        url=describe_url(server_url),
        issuer=auth_server.issuer,
        registration=auth_server.registration_endpoint is not None,
        default_endpoints=assumed,
    )
    return Success(Discovery(server_url, resource, resource_metadata, auth_server, challenge, assumed))


# --- servers of the 2025-03-26 revision ----------------------------------------------------------


def origin_of(url: str) -> str:
    """`scheme://host[:port]`: the 2025-03-26 revision's "authorization base URL" (the path is discarded)."""
    parts = urlsplit(canonical_resource(url))
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def default_endpoints(origin: str) -> AuthServerMetadata:
    """The endpoints the 2025-03-26 revision assigns a server that publishes no metadata: on its own origin."""
    return AuthServerMetadata(
        issuer=origin,
        authorization_endpoint=origin + "/authorize",
        token_endpoint=origin + "/token",
        registration_endpoint=origin + "/register",
    )


async def discover_at_origin(
    session: aiohttp.ClientSession,
    server_url: str,
    challenge: BearerChallenge | None,
    timeout_s: float,
    *,
    browser: bool = True,
) -> Result[Discovery]:
    """A server of the 2025-03-26 revision: its origin is its authorization server, described by RFC 8414
    metadata at the origin's `/.well-known/oauth-authorization-server`, or else at the default endpoints.

    Everything stays on the server's own origin, the one recorded for it: the metadata is fetched there, its
    `issuer` must be there too, and the default endpoints are there. The cleartext and loopback rules hold
    for the endpoints a document names, as for any authorization server.
    """
    origin = origin_of(server_url)
    url = origin + OAUTH_AS_WELL_KNOWN
    found = await _first_document(session, [url], timeout_s, missed_event="auth_server_metadata_missed")
    if isinstance(found, Failure):
        return found
    assumed = found.value is None
    log.info("resource_metadata_absent", url=describe_url(server_url), origin_metadata=not assumed)
    if found.value is None:
        auth_server: AuthServerMetadata = default_endpoints(origin)
    else:
        validated = validate_authorization_server_metadata(
            found.value.doc, origin, issuer_on_origin=True, browser=browser
        )
        if isinstance(validated, Failure):
            return validated
        auth_server = validated.value
    resource = canonical_resource(server_url)
    return _discovered(
        server_url, resource, ResourceMetadata(resource, (origin,)), auth_server, challenge, assumed=assumed
    )


async def discover_issuer(
    session: aiohttp.ClientSession, issuer: str, timeout_s: float = http.DEFAULT_TIMEOUT_S, *, browser: bool = True
) -> Result[Discovery]:
    """An OpenID provider signed in to for itself (a company identity provider): its metadata, no resource."""
    if has_user_info(issuer):  # aiohttp would send it as Basic auth, and messages show the URL
        return Failure(
            f"the identity provider's issuer URL {USER_INFO_PROBLEM}",
            ErrorCode.INVALID_PARAMS,
            "use its issuer URL without `user:password@`, the client secret apart: "
            "`chctl idp add NAME --issuer URL --client-id ID --client-secret -`",
        )
    if not is_secure_endpoint(issuer):
        return Failure(
            f"refusing {describe_url(issuer)}: its tokens would travel in clear text",
            ErrorCode.INVALID_PARAMS,
            "use the identity provider's https:// issuer URL (plain http is accepted on loopback only)",
        )
    auth_server = await fetch_authorization_server_metadata(session, issuer, timeout_s, browser=browser)
    if isinstance(auth_server, Failure):
        return auth_server
    local = local_endpoints(issuer, auth_server.value)
    if local:
        return Failure(
            f"the identity provider's metadata points {', '.join(local)} at this machine or its link",
            ErrorCode.OAUTH_ERROR,
            "the identity provider is misconfigured or hostile; not continuing",
        )
    return Success(Discovery(issuer, "", ResourceMetadata("", (issuer,)), auth_server.value))
