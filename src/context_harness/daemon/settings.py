"""Daemon settings from the environment (prefix `CH_`), with the defaults docs/guide.md lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from context_harness.daemon.home_trust import check_home
from context_harness.net.proxies import from_variables, read_env_file
from context_harness.net.session import NetworkSettings
from context_harness.net.tls import client_context
from context_harness.services.oauth_service import OAuthSettings
from context_harness.services.publisher import PublishSettings
from context_harness.workers.refresher import RefreshSettings

# Refresh with a quarter of the lifetime left: a 1 h token is renewed 15 min early.
REFRESH_AT_FRACTION = 0.75
# A few percent of the lifetime, so tokens issued together do not all refresh in the same second.
REFRESH_JITTER_FRACTION = 0.05
# `expires_in: 1` would otherwise mean a refresh every 0.75 s; real servers issue tokens of a minute or more.
MIN_REFRESH_SPACING_S = 10.0


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

    @field_validator("ca_bundle")
    @classmethod
    def _readable_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            client_context(value)  # ValueError naming the file: the daemon does not start (or reload) with it
        return value

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

    def network(self) -> NetworkSettings:
        """The proxy variables of the environment, then of daemon.env, read now (a reload reads them again)."""
        proxies = from_variables(os.environ, read_env_file(settings_file(self.home)))
        return NetworkSettings(proxies=proxies, ca_bundle=self.ca_bundle)

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
    return Settings(_env_file=extra) if extra.is_file() else from_env  # type: ignore[call-arg]
