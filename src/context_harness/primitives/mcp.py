"""MCP servers as the registry knows them and as opencode's config holds them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from context_harness.primitives.names import ServerName


class MCPAuthType(StrEnum):
    NONE = "none"
    API_KEY = "api-key"
    OAUTH = "oauth"


class ServerType(StrEnum):
    REMOTE = "remote"
    LOCAL = "local"


# How an entry gets its credential. header: the entry holds it (inline or `{file:}`) and we rewrite it on every
# refresh; bridge: the entry runs `chctl bridge NAME` and the daemon carries the traffic, adding the credential
# itself; helper: the client runs `chctl token NAME` for its headers at each connect (Claude Code's
# `headersHelper`). Nothing secret is in the file in the last two.
Mode = Literal["header", "bridge", "helper"]


class SecretMode(StrEnum):
    """Where a header's secret lives: in the config itself, or in a 0600 file opencode reads via `{file:}`."""

    INLINE = "inline"
    FILE = "file"


class MCPServer(BaseModel):
    """A registry entry: a server we know how to add."""

    model_config = ConfigDict(extra="forbid")

    name: ServerName
    description: str = ""
    server_type: ServerType = ServerType.REMOTE
    url: str | None = None
    command: list[str] | None = None
    auth_type: MCPAuthType = MCPAuthType.NONE
    # For api-key servers: the header that carries the key. "Authorization" means "Authorization: Bearer KEY".
    api_key_header: str | None = None
    # For OAuth servers that do not support dynamic registration: a public client id to use, if one exists.
    client_id: str | None = None
    # How that client authenticates at the token endpoint, when the provider insists on one.
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    needs_preregistered_client: bool = False
    docs_url: str | None = None
    source: Literal["builtin", "user"] = "builtin"


class MCPServerConfig(BaseModel):
    """One `mcp.<name>` entry exactly as opencode 1.18 reads it (no `args`, no `env`: opencode drops them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: ServerType
    url: str | None = None
    command: list[str] | None = None
    environment: dict[str, str] | None = None
    cwd: str | None = None
    headers: dict[str, str] | None = None
    oauth: dict[str, Any] | Literal[False] | None = None
    enabled: bool | None = None
    timeout: int | None = Field(default=None, ge=0)

    def to_opencode(self) -> dict[str, Any]:
        """The JSON object to write, with only the keys that are set, in opencode's usual order."""
        return self.model_dump(mode="json", exclude_none=True)
