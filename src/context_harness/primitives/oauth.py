"""Tokens, credentials and client registrations as we keep them on disk and report them."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A token response without `expires_in` is treated as a 1-hour token (docs/design.md, "Token lifecycle").
DEFAULT_TOKEN_LIFETIME_S = 3600
# A server's `expires_in` is believed up to a year: `1e300` would overflow every date computed from it.
MAX_TOKEN_LIFETIME_S = 365 * 24 * 3600


class TokenState(StrEnum):
    """Where a server's credential is in its lifecycle."""

    API_KEY = "api_key"  # a static key: nothing to refresh
    PENDING_AUTH = "pending_auth"  # added, no login yet
    ACTIVE = "active"  # valid token, refresh scheduled
    REFRESHING = "refreshing"  # a refresh request is in flight
    RETRYING = "retrying"  # the last refresh failed transiently; backing off
    NEEDS_REAUTH = "needs_reauth"  # only a person can fix this: run `chctl auth NAME`


class TokenEvent(StrEnum):
    """What happened to a server's credential: told to the event hook, and to a person when one must act."""

    NEW = "new"  # a login (or an imported one) was stored
    REFRESHED = "refreshed"
    RETRYING = "retrying"  # a refresh failed for now; the daemon backs off and tries again
    EXPIRING = "expiring"  # a token without refresh token expires soon: log in again before then
    NEEDS_REAUTH = "needs_reauth"  # only `chctl auth NAME` helps
    REVOKED = "revoked"  # logged out
    # A bound config's entry now points at another URL: our header was taken out; `chctl add NAME` mends it.
    URL_CHANGED = "url_changed"
    # The server refused a call for lack of scope (403 `insufficient_scope`): `chctl auth NAME` asks for them.
    SCOPE_NEEDED = "scope_needed"

    @property
    def needs_a_person(self) -> bool:
        return self in (TokenEvent.NEEDS_REAUTH, TokenEvent.EXPIRING, TokenEvent.URL_CHANGED, TokenEvent.SCOPE_NEEDED)


class LoginKind(StrEnum):
    """How a server's OAuth token is obtained, and so how it is renewed."""

    BROWSER = "browser"  # authorization code + PKCE, a person in the browser; renewed with the refresh token
    # OAuth client credentials (SEP-1046): the client's own secret or signed assertion; renewed by asking again
    CLIENT_CREDENTIALS = "client_credentials"
    # Enterprise-managed (SEP-990): an ID-JAG from the company identity provider, then the JWT-bearer grant
    IDP = "idp"


class OAuthTokens(BaseModel):
    """What a token endpoint gave us, with an absolute expiry (wall clock, Unix seconds)."""

    model_config = ConfigDict(extra="ignore")

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: float | None = None
    issued_at: float = 0.0
    scope: str | None = None
    id_token: str | None = Field(default=None, repr=False)  # an OpenID Connect login's (the identity provider's)

    def is_expired(self, buffer_seconds: float = 60, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) > self.expires_at - buffer_seconds


class Credential(BaseModel):
    """Everything needed to present and renew one server's credential: `tokens/<name>.json`."""

    model_config = ConfigDict(extra="ignore")

    name: str
    kind: Literal["api_key", "oauth"]
    state: TokenState
    # The header we write: `<header_name>: <header_scheme> <secret>` (no scheme: the bare secret).
    header_name: str = "Authorization"
    header_scheme: str | None = "Bearer"
    api_key: str | None = None
    # More secret headers that go with an API key (a registry server may declare several), whole values:
    # carried by the bridge only, never written into a config; they rest where the key rests (the keychain).
    extra_headers: dict[str, str] | None = None
    tokens: OAuthTokens | None = None
    # The server this credential belongs to, recorded at login (or with the key at `chctl add`): the bridge,
    # a new login and every header write go there and nowhere else, whatever a config says later.
    server_url: str | None = None
    # OAuth: what a refresh needs, learned during `chctl auth`.
    issuer: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    token_endpoint_auth_method: str | None = None
    resource: str | None = None
    scopes: list[str] | None = None
    last_error: str | None = None
    login: LoginKind = LoginKind.BROWSER
    # Client credentials with `private_key_jwt` (RFC 7523 §2.2): the PEM key and its algorithm (ES256, RS256),
    # and the assertion's audience that the token endpoint took (its issuer, else the endpoint's URL).
    private_key: str | None = Field(default=None, repr=False)
    signing_alg: str | None = None
    assertion_audience: str | None = None
    idp: str | None = None  # LoginKind.IDP: the identity provider (`chctl idp add`) that vouches for the user
    # The command that mends `needs_reauth` (or a login not made yet), when it is not `chctl auth NAME`.
    fix: str | None = None

    @property
    def secret(self) -> str | None:
        """The value that goes in the header after the scheme: the API key or the access token."""
        if self.kind == "api_key":
            return self.api_key
        return self.tokens.access_token if self.tokens else None

    def header_value(self, secret: str | None = None) -> str:
        """`<header_scheme> <secret>`, or the bare secret without a scheme; `secret` stands in for the stored one
        (a config's reference to the secret file)."""
        secret = (self.secret or "") if secret is None else secret
        return f"{self.header_scheme} {secret}" if self.header_scheme else secret


class ClientRegistration(BaseModel):
    """A client we registered (or were given) at one authorization server: `clients/<server>.json`."""

    model_config = ConfigDict(extra="ignore")

    issuer: str
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    # "none" for a public client; "client_secret_basic" / "client_secret_post" when a secret was issued.
    token_endpoint_auth_method: str = "none"
    redirect_uris: list[str] = Field(default_factory=list)
    registered_at: float = 0.0
    # Unix seconds; 0 or None: the secret does not expire (RFC 7591 §3.2.1).
    client_secret_expires_at: float | None = None
    # A client the user registered with the provider and passed with --client-id: never registered
    # again by us; its redirect URIs are whatever the user registered (`redirect_uris` are the ones used).
    preregistered: bool = False

    def secret_expired(self, now: float | None = None) -> bool:
        if not self.client_secret or not self.client_secret_expires_at:
            return False
        return (time.time() if now is None else now) >= self.client_secret_expires_at
