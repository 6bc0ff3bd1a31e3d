"""The RPC methods' parameters, checked by pydantic before a handler runs. Documented in docs/protocol.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from context_harness.config.format import DEFAULT_CLIENT
from context_harness.oauth.jwts import MAX_KEY_BYTES
from context_harness.primitives.mcp import Mode, SecretMode
from context_harness.primitives.names import ServerName
from context_harness.primitives.text import printable
from context_harness.registries.api import MAX_SERVER_NAME, SERVER_NAME
from context_harness.services.config_service import ConfigTarget


def _path_text(value: str) -> str:
    if "\0" in value:  # the OS refuses such a path; say so instead of failing deep inside a service
        raise ValueError("a path cannot contain a NUL character")
    return value


def _absolute_path_text(value: str) -> str:
    if not os.path.isabs(_path_text(value)):
        raise ValueError("must be an absolute path")
    return value


SigningAlg = Literal["ES256", "RS256"]


def _one_line(value: str) -> str:
    if printable(value) != value:
        raise ValueError("must be plain text (no control or format characters)")
    return value


PathText = Annotated[str, AfterValidator(_path_text)]
AbsolutePathText = Annotated[str, AfterValidator(_absolute_path_text)]
# A server's name in an MCP registry: reverse-DNS namespace, a slash, the name (server.json's own rule).
RegistryName = Annotated[str, Field(max_length=MAX_SERVER_NAME, pattern=rf"^{SERVER_NAME.pattern}$")]
Version = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_one_line)]
# What a person passes with --var, --header-env: a few short values.
SmallMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=32)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NoParams(Params):
    pass


class TargetParams(Params):
    cwd: AbsolutePathText
    project: PathText | None = None
    global_: bool = Field(default=False, alias="global")
    client: str = DEFAULT_CLIENT

    def target(self) -> ConfigTarget:
        return ConfigTarget(
            cwd=Path(self.cwd), project=Path(self.project) if self.project else None, global_=self.global_
        )


class AddParams(TargetParams):
    name: ServerName
    url: str | None = None
    headers: dict[str, str] = {}
    api_key: str | None = None
    key_header: str | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    environment: dict[str, str] = {}
    secret_mode: SecretMode | None = None  # None: as recorded for the config, else inline
    bridge: bool = False
    mode: Mode | None = None
    clients: list[str] | None = Field(default=None, min_length=1)  # several at once; else `client`
    # A login without a person: OAuth client credentials, or a token derived from an identity provider's sign-in.
    client_credentials: bool = False
    idp: ServerName | None = None
    client_id: str | None = Field(default=None, max_length=4096)
    client_secret: str | None = Field(default=None, max_length=4096)
    private_key: str | None = Field(default=None, max_length=MAX_KEY_BYTES)  # PEM, for private_key_jwt
    signing_alg: SigningAlg | None = None
    scopes: list[Annotated[str, Field(max_length=256)]] | None = Field(default=None, max_length=64)
    # A server from an MCP registry (`chctl add NAMESPACE/NAME[@VERSION]`): `name` is then the local name.
    registry_name: RegistryName | None = None
    version: Version | None = None  # None: the latest
    variables: SmallMap = {}  # the URL's (and headers') {variables}
    secret_headers: SmallMap = {}  # secret header -> value (--header-env HEADER=ENVVAR)

    def named_clients(self) -> tuple[str, ...] | None:
        """The clients the caller named (`clients`, else `client`); None: neither, so as recorded."""
        if self.clients:
            return tuple(self.clients)
        return (self.client,) if "client" in self.model_fields_set else None


class SearchParams(Params):
    text: Annotated[str, Field(max_length=200), AfterValidator(_one_line)]


class RegistryShowParams(Params):
    name: RegistryName
    version: Version = "latest"


class BridgeOpenParams(Params):
    name: ServerName
    # After a daemon restart: the client's own `initialize` and `notifications/initialized`, to set up a new
    # upstream session without the client noticing.
    replay: list[dict[str, Any]] = Field(default_factory=list, max_length=2)


class NameTargetParams(TargetParams):
    name: ServerName


class RemoveParams(NameTargetParams):
    forget: bool = False  # once no config carries the server: forget its key, or log out (revoking the tokens)


class DoctorParams(Params):
    cwd: AbsolutePathText | None = None
    # chctl's proxy variables (as host:port) and CH_CA_BUNDLE, to compare with the daemon's.
    shell_network: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=16
    )


class SecretsMigrateParams(Params):
    to: Literal["keyring", "file"]


class CheckParams(Params):
    names: list[ServerName] | None = Field(default=None, max_length=256)  # None: every bound server
    cwd: AbsolutePathText | None = None  # a named server unbound here but local in the nearest config: started
    timeout_s: float = Field(default=20.0, gt=0, le=300)  # per server


class AuthStartParams(Params):
    name: ServerName
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str] | None = None
    token_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    port: int = Field(default=0, ge=0, le=65535)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)
    # A login without a person: a new key (PEM) in place of the stored secret or key.
    private_key: str | None = Field(default=None, max_length=MAX_KEY_BYTES)
    signing_alg: SigningAlg | None = None


class IdpAddParams(Params):
    name: ServerName
    issuer: str = Field(max_length=4096)
    client_id: str = Field(max_length=4096)
    client_secret: str | None = Field(default=None, max_length=4096)
    scopes: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=64)


class IdpLoginParams(Params):
    name: ServerName
    id_token: str | None = Field(default=None, max_length=MAX_KEY_BYTES)  # from the user's SSO tool, on stdin
    port: int = Field(default=0, ge=0, le=65535)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)


class RemoteAuthStartParams(Params):
    """`auth.start` through `remote.sock`: the server's name, nothing else (the handler refuses anything else
    with a reason, so the extras are kept, not refused here)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: ServerName


class FlowParams(Params):
    flow_id: str


class PasteParams(FlowParams):
    redirect_url: str


class NameParams(Params):
    name: ServerName


class TokenParams(NameParams):
    # Refresh first when the token expires sooner than this (capped at half its lifetime: see token_access.py).
    min_valid_s: float = Field(default=60.0, ge=0, le=24 * 3600)
    # The URL the credential is for (Claude Code's headersHelper says which one connects): must be the recorded one.
    for_url: str | None = Field(default=None, max_length=8192)


class ShareParams(Params):
    names: list[ServerName] = Field(min_length=1)


class ImportParams(TargetParams):
    client: Literal["opencode"] = "opencode"  # the adopted logins are written into opencode entries
    source: Literal["opencode", "mcp-remote"]
    path: str  # opencode's mcp-auth.json, or mcp-remote's config dir (~/.mcp-auth)
    dry_run: bool = False
