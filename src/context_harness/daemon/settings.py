"""Daemon settings, with the defaults docs/guide.md lists, from two places only: the documented `CH_*` and proxy
variables of the command that started the daemon (`chctl` and `chctl bridge` pass exactly those, see
`client/daemon_env.py`; a service passes what its unit sets), then `CH_HOME/daemon.env` for anything that
environment does not set. `sources()` says which gave each one (`chctl doctor` shows it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from context_harness.daemon.home_trust import check_home
from context_harness.net.ca_bundle import CaBundle, read_ca_bundle
from context_harness.net.proxies import VARIABLES as PROXY_VARIABLES
from context_harness.net.proxies import from_variables, read_env_file
from context_harness.net.session import NetworkSettings
from context_harness.net.tls import client_context
from context_harness.registries.api import OFFICIAL_REGISTRY, registry_bases
from context_harness.services.idp_service import IdpSettings
from context_harness.services.oauth_service import OAuthSettings
from context_harness.services.publisher import PublishSettings
from context_harness.services.registries import DEFAULT_CACHE_TTL_S, RegistrySettings
from context_harness.services.secret_vault import SecretSettings, SecretStoreSetting
from context_harness.workers.refresher import RefreshSettings

# Refresh with a quarter of the lifetime left: a 1 h token is renewed 15 min early.
REFRESH_AT_FRACTION = 0.75
# A few percent of the lifetime, so tokens issued together do not all refresh in the same second.
REFRESH_JITTER_FRACTION = 0.05
# gh's deadline for a keychain call: a locked, slow or vanished keychain fails the call, it never holds the daemon.
KEYCHAIN_TIMEOUT_S = 3.0
# `expires_in: 1` would otherwise mean a refresh every 0.75 s; real servers issue tokens of a minute or more.
MIN_REFRESH_SPACING_S = 10.0
TRUST_STORE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")  # the system store truststore uses, on Linux


def default_home() -> Path:
    return Path.home() / ".context-harness"


def default_socket(home: Path) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "context-harness" / "chd.sock"
    return home / "run" / "chd.sock"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CH_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    socket: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # A connection that sends nothing (or half a message) for this long is closed.
    rpc_idle_timeout_s: float = Field(default=30.0, gt=0)
    # The restricted socket meant to be forwarded to other machines; unset: beside `socket`; empty: none.
    remote_socket: str | None = None
    # On a remote machine: the forwarded socket; servers with no credential here are used through it.
    delegate_socket: str | None = None

    # Where secret values rest: the OS keychain when one answers (auto), only there (keyring), token files (file).
    secret_store: SecretStoreSetting = "auto"
    keychain_timeout_s: float = Field(default=KEYCHAIN_TIMEOUT_S, gt=0)

    # Token lifecycle
    refresh_fraction: float = Field(default=REFRESH_AT_FRACTION, gt=0, lt=1)
    refresh_jitter: float = Field(default=REFRESH_JITTER_FRACTION, ge=0, lt=0.5)
    max_concurrent_refreshes: int = Field(default=16, ge=1)
    # The scheduler's sleeps are capped so a laptop that slept past a refresh time catches up on wake.
    wallclock_check_s: float = Field(default=30.0, gt=0)
    # However short a server makes its tokens, refreshes of one server are at least this far apart.
    min_refresh_spacing_s: float = Field(default=MIN_REFRESH_SPACING_S, ge=0)
    http_timeout_s: float = Field(default=30.0, gt=0)
    # A config that takes longer to read and write is on a hung mount (or is a FIFO): that write fails for now.
    config_io_timeout_s: float = Field(default=10.0, gt=0)
    # Transient refresh failures: exponential backoff with full jitter from 5 s up to 5 min.
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    # The https URL where you host a Client ID Metadata Document for context-harness; used as the client id
    # with authorization servers that advertise support, before Dynamic Client Registration.
    client_metadata_url: str | None = None
    notify_command: list[str] | None = None
    event_command: list[str] | None = None
    # PEM certificates trusted in addition to the operating system's (a company CA); proxies come from the
    # usual HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY variables, in the environment or daemon.env.
    ca_bundle: Path | None = None
    # MCP registries searched by `chctl search` and `chctl add NAMESPACE/NAME`: base URLs, comma-separated
    # (empty: none, the curated list only); their answers are cached this long (and shown older when down).
    registry_url: str = OFFICIAL_REGISTRY
    registry_cache_ttl_s: float = Field(default=DEFAULT_CACHE_TTL_S, ge=0)
    _ca: CaBundle | None = PrivateAttr(default=None)  # the bundle's certificates, read once and checked
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)  # filled in by load_settings

    @model_validator(mode="after")
    def _read_bundle(self) -> Self:
        """Read CH_CA_BUNDLE now: a file others can change, or one without certificates, is a ValueError naming
        it, and the daemon does not start (a reload keeps the trust store it had)."""
        if self.ca_bundle is not None:
            self._ca = read_ca_bundle(self.ca_bundle)
            client_context(self._ca)
        return self

    def sources(self) -> dict[str, str]:
        """Where each setting that is set came from: `environment` (of the command that started the daemon) or
        `daemon.env`, by variable name; a setting not listed has its default."""
        return dict(self._sources)

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else default_socket(self.home)

    @property
    def remote_socket_path(self) -> Path | None:
        if self.remote_socket is None:
            return self.socket_path.parent / "remote.sock"
        return Path(self.remote_socket) if self.remote_socket else None

    @property
    def delegate_socket_path(self) -> Path | None:
        return Path(self.delegate_socket) if self.delegate_socket else None

    @property
    def shared_file(self) -> Path:
        return self.home / "shared.json"

    @property
    def tokens_dir(self) -> Path:
        return self.home / "tokens"

    @property
    def clients_dir(self) -> Path:
        return self.home / "clients"

    @property
    def idps_dir(self) -> Path:
        return self.home / "idps"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def bindings_file(self) -> Path:
        return self.home / "bindings.json"

    @property
    def user_registry_file(self) -> Path:
        return self.home / "registry.json"

    @property
    def registry_cache_dir(self) -> Path:
        return self.home / "cache" / "registries"

    @property
    def lock_file(self) -> Path:
        return self.home / "daemon.lock"

    # --- what each part gets: only the settings it needs, frozen -----------------------------------------

    def oauth(self) -> OAuthSettings:
        return OAuthSettings(
            locks_dir=self.locks_dir,
            http_timeout_s=self.http_timeout_s,
            config_io_timeout_s=self.config_io_timeout_s,
            min_refresh_spacing_s=self.min_refresh_spacing_s,
            client_metadata_url=self.client_metadata_url,
        )

    def idp(self) -> IdpSettings:
        return IdpSettings(locks_dir=self.locks_dir, http_timeout_s=self.http_timeout_s)

    def network(self) -> NetworkSettings:
        """The proxy variables of the environment, then of daemon.env, read now (a reload reads them again)."""
        proxies = from_variables(os.environ, read_env_file(settings_file(self.home)))
        return NetworkSettings(proxies=proxies, ca_bundle=self._ca)

    def secrets(self) -> SecretSettings:
        return SecretSettings(
            store=self.secret_store, keychain_timeout_s=self.keychain_timeout_s, home=str(self.home.resolve())
        )

    def registries(self) -> RegistrySettings:
        urls, problems = registry_bases(self.registry_url)
        return RegistrySettings(tuple(urls), tuple(problems), self.registry_cache_ttl_s)

    def publishing(self) -> PublishSettings:
        return PublishSettings(io_timeout_s=self.config_io_timeout_s)

    def refreshing(self) -> RefreshSettings:
        return RefreshSettings(
            refresh_fraction=self.refresh_fraction,
            refresh_jitter=self.refresh_jitter,
            max_concurrent_refreshes=self.max_concurrent_refreshes,
            wallclock_check_s=self.wallclock_check_s,
            min_refresh_spacing_s=self.min_refresh_spacing_s,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
        )


def settings_file(home: Path) -> Path:
    """Optional `KEY=value` lines (CH_NOTIFY_COMMAND=..., CH_LOG_LEVEL=...) re-read on SIGHUP."""
    return home / "daemon.env"


def load_settings() -> Settings:
    """The environment, then CH_HOME/daemon.env for anything the environment does not set.

    Raises UntrustedHome before reading anything from a CH_HOME that is not the user's own.
    """
    from_env = Settings()
    check_home(from_env.home)
    extra = settings_file(from_env.home)
    settings = Settings(_env_file=extra) if extra.is_file() else from_env  # type: ignore[call-arg]
    settings._sources = setting_sources(os.environ, read_env_file(extra))
    return settings


def setting_names() -> list[str]:
    """The `CH_` variable of each setting, as docs/guide.md's Settings table lists them."""
    return [f"CH_{field.upper()}" for field in Settings.model_fields]


def setting_sources(environ: Mapping[str, str], env_file: Mapping[str, str | None]) -> dict[str, str]:
    """`environment` or `daemon.env` for each setting variable set in either, the environment first (as for the
    values): `CH_<FIELD>` in any case (as pydantic-settings reads them), the proxy variables by their spelling."""
    origins = (("environment", environ), ("daemon.env", env_file))
    sources: dict[str, str] = {}
    for name in setting_names():
        found = next((o for o, values in origins if any(k.upper() == name and v for k, v in values.items())), None)
        if found is not None:
            sources[name] = found
    for spelling in (s for upper in PROXY_VARIABLES for s in (upper, upper.lower())):
        found = next((o for o, values in origins if values.get(spelling)), None)
        if found is not None:
            sources[spelling] = found
    for name in TRUST_STORE_VARIABLES:  # OpenSSL reads them from the environment only
        if environ.get(name):
            sources[name] = "environment"
    return sources
