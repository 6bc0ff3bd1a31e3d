"""Logins other tools already hold, read from their files as those tools write them. Files are only read.

opencode 1.18 (`McpAuth`): `$XDG_DATA_HOME/opencode/mcp-auth.json` (0600), one object keyed by the MCP
server's name in opencode's config::

    {"linear": {"tokens": {"accessToken", "refreshToken"?, "expiresAt"? (Unix seconds), "scope"?},
                "clientInfo"?: {"clientId", "clientSecret"?, "clientIdIssuedAt"?, "clientSecretExpiresAt"?},
                "codeVerifier"?, "oauthState"?, "serverUrl"?}}

mcp-remote 0.15: `$MCP_REMOTE_CONFIG_DIR` (default `~/.mcp-auth`) `/mcp-remote-v1/`, files named after an
md5 of the server URL (plus the resource, headers and options when given on mcp-remote's command line):
`<hash>_tokens.json` (the token response plus `expires_at` in Unix milliseconds, `requested_scope`,
`issuer`) and `<hash>_client_info.json` (the RFC 7591 client information, plus `issuer`). The URL itself is
not stored, so a login is matched to a config entry by hashing the entry's URL.

Pure functions over parsed JSON; the caller reads the files.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from context_harness.primitives.oauth import OAuthTokens

MCP_REMOTE_STORE = "mcp-remote-v1"  # mcp-remote's CONFIG_STORE_VERSION 1
TOKENS_SUFFIX = "_tokens.json"
CLIENT_SUFFIX = "_client_info.json"


@dataclass(frozen=True, slots=True)
class HeldLogin:
    """One login found in another tool's files: tokens, the client that got them, where they are for."""

    name: str | None  # the server's name, where the source knows it (opencode); None for mcp-remote
    server_url: str | None
    url_hash: str | None  # mcp-remote's md5 of the server URL
    tokens: OAuthTokens
    client_id: str | None = None
    client_secret: str | None = None
    client_secret_expires_at: float | None = None
    token_endpoint_auth_method: str | None = None
    issuer: str | None = None  # where the source recorded it (mcp-remote 0.15)


@dataclass(frozen=True, slots=True)
class Unusable:
    """An entry in the source that holds no login we can adopt, and why (shown, never dropped silently)."""

    where: str
    reason: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def opencode_logins(document: Any, now: float | None = None) -> tuple[list[HeldLogin], list[Unusable]]:
    """The logins in opencode's mcp-auth.json (parsed)."""
    if not isinstance(document, dict):
        return [], [Unusable("mcp-auth.json", "not a JSON object")]
    found: list[HeldLogin] = []
    unusable: list[Unusable] = []
    issued = time.time() if now is None else now
    for name, entry in document.items():
        tokens = entry.get("tokens") if isinstance(entry, dict) else None
        access = _text(tokens.get("accessToken")) if isinstance(tokens, dict) else None
        if not isinstance(tokens, dict) or access is None:
            unusable.append(Unusable(str(name), "no tokens (a login that never finished)"))
            continue
        client = entry.get("clientInfo") if isinstance(entry.get("clientInfo"), dict) else {}
        found.append(
            HeldLogin(
                name=str(name),
                server_url=_text(entry.get("serverUrl")),
                url_hash=None,
                tokens=OAuthTokens(
                    access_token=access,
                    refresh_token=_text(tokens.get("refreshToken")),
                    expires_at=_number(tokens.get("expiresAt")),
                    issued_at=issued,
                    scope=_text(tokens.get("scope")),
                ),
                client_id=_text(client.get("clientId")),
                client_secret=_text(client.get("clientSecret")),
                client_secret_expires_at=_number(client.get("clientSecretExpiresAt")),
            )
        )
    return found, unusable


def mcp_remote_logins(
    files: dict[str, Any], mtimes: dict[str, float] | None = None
) -> tuple[list[HeldLogin], list[Unusable]]:
    """The logins in mcp-remote's store: `files` maps file names in `mcp-remote-v1/` to their parsed JSON."""
    found: list[HeldLogin] = []
    unusable: list[Unusable] = []
    for filename, tokens in sorted(files.items()):
        if not filename.endswith(TOKENS_SUFFIX):
            continue
        url_hash = filename.removesuffix(TOKENS_SUFFIX)
        access = _text(tokens.get("access_token")) if isinstance(tokens, dict) else None
        if not isinstance(tokens, dict) or access is None:
            unusable.append(Unusable(filename, "no access token"))
            continue
        saved_at = (mtimes or {}).get(filename, time.time())
        expires_at_ms = _number(tokens.get("expires_at"))
        expires_in = _number(tokens.get("expires_in"))
        expires_at = expires_at_ms / 1000 if expires_at_ms else (saved_at + expires_in if expires_in else None)
        client = files.get(url_hash + CLIENT_SUFFIX)
        client = client if isinstance(client, dict) else {}
        found.append(
            HeldLogin(
                name=None,
                server_url=None,
                url_hash=url_hash,
                tokens=OAuthTokens(
                    access_token=access,
                    refresh_token=_text(tokens.get("refresh_token")),
                    expires_at=expires_at,
                    issued_at=saved_at,
                    scope=_text(tokens.get("scope")),
                ),
                client_id=_text(client.get("client_id")),
                client_secret=_text(client.get("client_secret")),
                client_secret_expires_at=_number(client.get("client_secret_expires_at")),
                token_endpoint_auth_method=_text(client.get("token_endpoint_auth_method")),
                issuer=_text(tokens.get("issuer")) or _text(client.get("issuer")),
            )
        )
    return found, unusable


def mcp_remote_hash(server_url: str) -> str:
    """mcp-remote's name for a server's files when only the URL was given on its command line."""
    return hashlib.md5(server_url.encode(), usedforsecurity=False).hexdigest()


def entry_urls(entry: Any) -> list[str]:
    """The server URLs an opencode entry points at: a remote entry's `url`, or mcp-remote's URL argument."""
    if not isinstance(entry, dict):
        return []
    if entry.get("type") == "remote" and isinstance(entry.get("url"), str):
        return [entry["url"]]
    command = entry.get("command")
    if entry.get("type") == "local" and isinstance(command, list) and is_mcp_remote(command):
        return [arg for arg in command if isinstance(arg, str) and arg.startswith(("http://", "https://"))][:1]
    return []


def is_mcp_remote(command: list[Any]) -> bool:
    return any(isinstance(arg, str) and arg.split("@")[0].rsplit("/", 1)[-1] == "mcp-remote" for arg in command)
