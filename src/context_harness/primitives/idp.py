"""A company identity provider and the user's sign-in there, as we keep it on disk: `idps/<name>.json`.

Enterprise-managed authorization (SEP-990): one OpenID Connect sign-in at the identity provider (IdP) yields an
ID token; for each MCP server that trusts the IdP, the daemon exchanges that ID token for an Identity Assertion
JWT Authorization Grant (ID-JAG, RFC 8693) and the ID-JAG for the server's access token (RFC 7523). The ID token
is what has to stay valid: the IdP's refresh token renews it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from context_harness.primitives.oauth import OAuthTokens, TokenState


class IdpLogin(BaseModel):
    """One identity provider (`chctl idp add`) and the sign-in made there (`chctl idp login`)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    issuer: str
    client_id: str  # the MCP client's registration at the IdP (the ID token's audience)
    client_secret: str | None = Field(default=None, repr=False)
    token_endpoint: str | None = None
    token_endpoint_auth_method: str | None = None
    revocation_endpoint: str | None = None
    scopes: list[str] = Field(default_factory=list)  # asked for at sign-in: openid, offline_access, ...
    state: TokenState = TokenState.PENDING_AUTH
    id_token: str | None = Field(default=None, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    access_token: str | None = Field(default=None, repr=False)  # the IdP's own, kept for revocation only
    issued_at: float = 0.0
    expires_at: float | None = None  # the ID token's `exp`: a derivation needs it unexpired
    subject: str | None = None  # the ID token's `sub`, shown by `chctl idp list`
    last_error: str | None = None

    def lifetime(self) -> OAuthTokens | None:
        """The ID token as the refresher plans it (the refresh token renews it); None before a sign-in."""
        if self.id_token is None:
            return None
        return OAuthTokens(
            access_token=self.id_token,
            refresh_token=self.refresh_token,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
        )
