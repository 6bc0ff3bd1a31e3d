"""What a server asks for before it answers, found once when it is added: an MCP `initialize` sent without
credentials, as any client's first request.

- A 401 whose `Bearer` challenge names protected-resource metadata, or a 401 from a server that publishes that
  metadata at its well-known URL (RFC 9728), or, as a server of the 2025-03-26 revision does, authorization-server
  metadata at its origin (RFC 8414), wants an OAuth login: what `chctl auth` starts from.
- Any other 401 wants a credential that publishes nothing about a login: an API key, most likely (a 2025-03-26
  server that relies on the default endpoints alone looks the same; `chctl auth NAME` still logs in to it).
- An answer (2xx) wants nothing.

A server that cannot be asked (down, slow, an error page) says nothing: `None`, and nothing is recorded. No
credential is ever sent here; bodies are bounded by `oauth.http`.
"""

from __future__ import annotations

from http import HTTPStatus

import aiohttp

from context_harness.oauth import http
from context_harness.oauth.challenge import parse_www_authenticate
from context_harness.oauth.discovery import (
    OAUTH_AS_WELL_KNOWN,
    initialize_without_credentials,
    origin_of,
    protected_resource_metadata_urls,
)
from context_harness.primitives.mcp import MCPAuthType
from context_harness.primitives.result import Failure

# `chctl add` waits for the server at most this long per request: a server that is down must not hold the add
# up (its entry is written either way).
PROBE_TIMEOUT_S = 5.0


def verdict(status: int, challenge_names_metadata: bool, metadata_published: bool) -> MCPAuthType | None:
    """The auth a server wants, from its answer without credentials (see the module's docstring)."""
    if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
        return MCPAuthType.NONE
    if status != HTTPStatus.UNAUTHORIZED:
        return None
    return MCPAuthType.OAUTH if challenge_names_metadata or metadata_published else MCPAuthType.API_KEY


async def auth_wanted(
    session: aiohttp.ClientSession, url: str, timeout_s: float = PROBE_TIMEOUT_S
) -> MCPAuthType | None:
    """Ask the server at `url` without credentials what it wants; None when it cannot be told."""
    sent = await initialize_without_credentials(session, url, timeout_s)
    if isinstance(sent, Failure):
        return None
    status = sent.value.status
    if status != HTTPStatus.UNAUTHORIZED:
        return verdict(status, False, False)
    challenge = parse_www_authenticate(sent.value.headers.get("WWW-Authenticate"))
    if challenge is not None and challenge.resource_metadata:
        return verdict(status, True, False)
    for metadata_url in [*protected_resource_metadata_urls(url), origin_of(url) + OAUTH_AS_WELL_KNOWN]:
        got = await http.request(session, "GET", metadata_url, headers=http.JSON_ACCEPT, timeout_s=timeout_s)
        if isinstance(got, Failure):
            return None
        if got.value.status == HTTPStatus.OK:
            return verdict(status, False, True)
    return verdict(status, False, False)
