"""context-harnessd: start-up, the serving loop, reload and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import aiohttp
import structlog
from pydantic import ValidationError

from context_harness.daemon import sd_notify
from context_harness.daemon.auth_flows import AuthFlows
from context_harness.daemon.bridge import Bridges
from context_harness.daemon.home_trust import UntrustedHome
from context_harness.daemon.logging import configure_logging
from context_harness.daemon.notifier import Notifier
from context_harness.daemon.refresher import Refresher
from context_harness.daemon.rpc_auth_methods import auth_methods
from context_harness.daemon.rpc_methods import build_methods, stream_methods
from context_harness.daemon.rpc_server import Method, RpcServer
from context_harness.daemon.settings import Settings, load_settings
from context_harness.daemon.single_instance import (
    AlreadyRunning,
    acquire_lock,
    bind_listener,
    remove_socket,
    socket_inode,
)
from context_harness.daemon.socket_activation import inherited_listener
from context_harness.oauth.http import new_session
from context_harness.services import doctor
from context_harness.services.config_service import ConfigService
from context_harness.services.doctor import Check
from context_harness.services.import_service import ImportService
from context_harness.services.mcp_service import MCPService
from context_harness.services.oauth_service import OAuthService
from context_harness.services.publisher import PublishConfig, Publisher
from context_harness.stores.atomic import ensure_private_dir
from context_harness.stores.bindings import BindingStore
from context_harness.stores.client_store import ClientStore
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

# Held back from process start until the loop's handlers are in place, so a SIGTERM that arrives while the
# socket is already listening but the handlers are not yet installed is not fatal: it is handled, late.
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class Daemon:
    """The daemon's state and services; one per process."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.started_monotonic = time.monotonic()
        self.config = ConfigService()
        self.tokens = TokenStore(settings.tokens_dir, settings.secrets_dir)
        self.bindings = BindingStore(settings.bindings_file)
        self.publisher = Publisher(self.config, self.tokens, self.bindings, PublishConfig(settings.config_io_timeout_s))
        self.mcp = MCPService(self.config, self.tokens, self.bindings, self.publisher, settings.user_registry_file)
        self.notifier = Notifier(settings.notify_command, settings.event_command)
        self._http: aiohttp.ClientSession | None = None
        self.oauth = OAuthService(
            settings,
            self.tokens,
            ClientStore(settings.clients_dir),
            self.mcp,
            self.publisher,
            self.http,
            events=self.notifier,
            on_new_credential=self.on_credential_changed,
        )
        self.flows = AuthFlows(self.oauth)
        self.bridges = Bridges(self.tokens, self.oauth, self.http, on_refreshed=self.on_credential_changed)
        self.imports = ImportService(self.mcp, self.oauth, self.oauth.clients, self.http, settings.http_timeout_s)
        self.refresher = Refresher(settings, self.oauth, self.tokens, clock=clock)
        self._stop = asyncio.Event()

    def http(self) -> aiohttp.ClientSession:
        """One client session for the daemon's outgoing requests, made inside the running loop."""
        if self._http is None or self._http.closed:
            self._http = new_session()
        return self._http

    def extra_methods(self) -> dict[str, Method]:
        return auth_methods(self)

    def on_credential_changed(self, name: str) -> None:
        """A credential was stored, refreshed elsewhere or forgotten: (re)plan its refresh."""
        if self.scheduler_running:
            self.refresher.schedule(name)

    @property
    def scheduler_running(self) -> bool:
        return bool(self.refresher.scheduler.running)

    def next_refresh_at(self, name: str) -> float | None:
        return self.refresher.next_refresh_at(name)

    async def unauthenticated_server_checks(self) -> list[Check]:
        return await doctor.unauthenticated_servers(self.http(), self.config, self.bindings, self.tokens)

    # --- lifecycle ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the registry and the settings (CH_HOME/daemon.env); tokens stay where they are."""
        sd_notify.notify("RELOADING=1")
        try:
            fresh = load_settings()
        except UntrustedHome as exc:
            log.error("reload_refused", problem=str(exc))
            fresh = self.settings
        except ValidationError as exc:
            # A typo in daemon.env must not leave systemd waiting for READY=1 or skip the registry reload.
            log.error("reload_settings_invalid", problems=_settings_problems(exc))
            fresh = self.settings
        if (fresh.home, fresh.socket_path) != (self.settings.home, self.settings.socket_path):
            log.warning("reload_ignored_paths", hint="CH_HOME and CH_SOCKET change only with a restart")
            fresh = fresh.model_copy(update={"home": self.settings.home, "socket": self.settings.socket})
        self.settings = self.oauth.settings = self.refresher.settings = fresh
        self.notifier.configure(fresh.notify_command, fresh.event_command)
        configure_logging(fresh.log_level, fresh.log_format)
        self.mcp.reload_registry()
        log.info("daemon_reloaded", registry_servers=len(self.mcp.registry))
        sd_notify.notify("READY=1")

    async def run(self, listener: socket.socket) -> None:
        server = RpcServer(
            build_methods(self), streams=stream_methods(self), idle_timeout=self.settings.rpc_idle_timeout_s
        )
        await server.start(listener)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # what arrived during start-up runs now
        log.info("daemon_started", pid=os.getpid(), socket=str(self.settings.socket_path), home=str(self.settings.home))
        self.refresher.start()
        sd_notify.notify("READY=1")
        await self._stop.wait()
        sd_notify.notify("STOPPING=1")
        log.info("daemon_stopping")
        await self.flows.cancel_all()
        await self.refresher.stop()  # refreshes in flight finish their writes first
        await server.stop()
        await self.notifier.drain()
        if self._http is not None:
            await self._http.close()


def prepare_listener(settings: Settings) -> tuple[socket.socket, bool]:
    """The listening socket, and whether we bound it ourselves (then we remove it on exit)."""
    inherited = inherited_listener()
    if inherited is not None:
        return inherited, False
    return bind_listener(settings.socket_path), True


def _settings_problems(exc: ValidationError) -> str:
    """Which settings are wrong and why, without their values (a notify command may hold a secret)."""
    return "; ".join(
        f"CH_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors(include_input=False)
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(
            "usage: context-harnessd\n\nRuns the context-harness daemon in the foreground. Settings come from "
            "CH_* environment variables (CH_HOME, CH_SOCKET, CH_LOG_LEVEL, CH_LOG_FORMAT); see README.md."
        )
        return 0
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        settings = load_settings()
    except UntrustedHome as exc:
        print(f"context-harnessd: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"context-harnessd: invalid settings: {_settings_problems(exc)}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    os.umask(0o077)  # every file we create is private unless we say otherwise (configs keep their own mode)
    try:
        ensure_private_dir(settings.home)
        lock_fd = acquire_lock(settings.lock_file)
        listener, bound_here = prepare_listener(settings)
    except AlreadyRunning as exc:
        print(f"context-harnessd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"context-harnessd: cannot start: {exc.strerror} ({exc.filename or settings.socket_path})", file=sys.stderr
        )
        return 1
    inode = socket_inode(settings.socket_path) if bound_here else None
    try:
        asyncio.run(Daemon(settings).run(listener))
    finally:
        if bound_here:
            remove_socket(settings.socket_path, inode)
        listener.close()
        with contextlib.suppress(OSError):
            os.close(lock_fd)
    log.info("daemon_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
