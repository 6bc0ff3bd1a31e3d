"""context-harnessd: start-up, the serving loop, reload and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

import structlog
from pydantic import ValidationError

from context_harness.daemon import sd_notify
from context_harness.daemon.descriptors import handle_loop_exception, raise_descriptor_limit
from context_harness.daemon.home_trust import UntrustedHome, UntrustedSocketDir
from context_harness.daemon.logging import configure_logging
from context_harness.daemon.rpc_remote_methods import NOT_REMOTE
from context_harness.daemon.rpc_server import RpcServer, TakeoverCount
from context_harness.daemon.rpc_table import METHODS, REMOTE, REMOTE_STREAMS, STREAMS, bind
from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings, load_settings
from context_harness.daemon.single_instance import (
    AlreadyRunning,
    acquire_lock,
    bind_listener,
    remove_socket,
    socket_inode,
)
from context_harness.daemon.socket_activation import inherited_listener
from context_harness.stores.atomic import ensure_private_dir
from context_harness.workers.peer_limits import MAX_BRIDGES, REMOTE_SOCKET_LIMITS

log = structlog.get_logger(__name__)

# Held back from process start until the loop's handlers are in place, so a SIGTERM that arrives while the
# socket is already listening but the handlers are not yet installed is not fatal: it is handled, late.
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class Daemon:
    """The process around the services: the RPC server, signals, reload and shutdown; one per process."""

    def __init__(self, settings: Settings) -> None:
        self.services = build_services(settings)
        self.server: RpcServer | None = None
        self.remote_server: RpcServer | None = None

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def request_stop(self) -> None:
        self.services.stop_requested.set()

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
        configure_logging(fresh.log_level, fresh.log_format)
        self.services.configure(fresh)
        for server in (self.server, self.remote_server):
            if server is not None:
                server.idle_timeout = fresh.rpc_idle_timeout_s
        log.info("daemon_reloaded", registry_servers=len(self.services.mcp.registry))
        sd_notify.notify("READY=1")

    async def run(self, listener: socket.socket, remote_listener: socket.socket | None = None) -> None:
        services = self.services
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(handle_loop_exception)  # EMFILE on accept: one line a minute, not per retry
        bridges = TakeoverCount(MAX_BRIDGES)  # both sockets' bridges together
        # Before the first request: a credential whose values rest in the keychain is read (with a deadline)
        # and held, so a bridge reconnecting right after a restart finds it.
        await services.vault.start()
        server = self.server = RpcServer(
            bind(METHODS, services),
            streams=bind(STREAMS, services),
            idle_timeout=self.settings.rpc_idle_timeout_s,
            all_takeovers=bridges,
        )
        await server.start(listener)
        if remote_listener is not None:  # the restricted socket for other machines: same uid rule, fewer methods
            self.remote_server = RpcServer(
                bind(REMOTE, services),
                streams=bind(REMOTE_STREAMS, services),
                idle_timeout=self.settings.rpc_idle_timeout_s,
                refusal=NOT_REMOTE,
                limits=REMOTE_SOCKET_LIMITS,
                all_takeovers=bridges,
            )
            await self.remote_server.start(remote_listener)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # what arrived during start-up runs now
        log.info("daemon_started", pid=os.getpid(), socket=str(self.settings.socket_path), home=str(self.settings.home))
        services.refresher.start()
        services.idp_refresher.start()
        sd_notify.notify("READY=1")
        await services.stop_requested.wait()
        sd_notify.notify("STOPPING=1")
        log.info("daemon_stopping")
        await services.flows.cancel_all()
        await services.refresher.stop()  # refreshes in flight finish their writes first
        await services.idp_refresher.stop()
        if self.remote_server is not None:
            await self.remote_server.stop()
        await server.stop()
        await services.close()


def prepare_listener(settings: Settings) -> tuple[socket.socket, bool]:
    """The listening socket, and whether we bound it ourselves (then we remove it on exit)."""
    inherited = inherited_listener()
    if inherited is not None:
        return inherited, False
    return bind_listener(settings.socket_path), True


def _settings_problems(exc: ValidationError) -> str:
    """Which settings are wrong and why, without their values (a notify command may hold a secret)."""
    return "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors(include_input=False))


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    """`CH_NAME: why`; a check of several settings together (the CA bundle's) names its variable itself."""
    if not loc:
        return message.removeprefix("Value error, ")
    return f"CH_{'.'.join(str(p) for p in loc).upper()}: {message}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(
            "usage: context-harnessd\n\nRuns the context-harness daemon in the foreground. Settings come from "
            "CH_* environment variables (CH_HOME, CH_SOCKET, CH_LOG_LEVEL, CH_LOG_FORMAT); see docs/guide.md."
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
    before, after = raise_descriptor_limit()
    log.info("descriptor_limit", soft_limit=after, raised_from=before if after != before else None)
    os.umask(0o077)  # every file we create is private unless we say otherwise (configs keep their own mode)
    try:
        ensure_private_dir(settings.home)
        lock_fd = acquire_lock(settings.lock_file)
        listener, bound_here = prepare_listener(settings)
        remote_path = settings.remote_socket_path
        remote_listener = bind_listener(remote_path) if remote_path is not None else None
    except (AlreadyRunning, UntrustedSocketDir) as exc:
        print(f"context-harnessd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"context-harnessd: cannot start: {exc.strerror} ({exc.filename or settings.socket_path})", file=sys.stderr
        )
        return 1
    inode = socket_inode(settings.socket_path) if bound_here else None
    remote_inode = socket_inode(remote_path) if remote_path is not None else None
    try:
        asyncio.run(Daemon(settings).run(listener, remote_listener))
    finally:
        if bound_here:
            remove_socket(settings.socket_path, inode)
        listener.close()
        if remote_path is not None and remote_listener is not None:
            remove_socket(remote_path, remote_inode)
            remote_listener.close()
        with contextlib.suppress(OSError):
            os.close(lock_fd)
    log.info("daemon_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
