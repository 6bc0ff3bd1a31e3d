"""`chctl service install | uninstall | status [--dry-run]`: run the daemon from login.

Linux: systemd user units (a socket unit plus a `Type=notify` service) in
`$XDG_CONFIG_HOME/systemd/user/`. macOS: a launchd agent in `~/Library/LaunchAgents/`.
Standard library only (and no daemon code): chctl imports this for `chctl service`.

Each command is a plan of actions (`service_plan`), printed by `--dry-run` or carried out.
The machine and the command runner are parameters so tests can stand in for either.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from context_harness import service_units as units
from context_harness.client.output import error_tag, print_error, print_hint
from context_harness.client.service_env import (
    ENV_FILE_MODE,
    carried_variables,
    control_character_in,
    daemon_env_file,
    masked,
    updated_env_file,
)
from context_harness.client.service_plan import (
    Action,
    Completed,
    MakeDir,
    Remove,
    Run,
    Runner,
    ServiceError,
    Write,
    describe,
    execute,
)
from context_harness.primitives.path_trust import untrusted_because
from context_harness.primitives.result import ErrorCode, Failure

DAEMON_EXECUTABLE = "context-harnessd"
# A service manager that has not answered in this long is not going to.
COMMAND_TIMEOUT_S = 60.0
NO_SERVICE_MANAGER_HINT = "run the daemon without a service manager: chctl daemon start"


# --- running commands ---------------------------------------------------------------------------


def run_command(argv: Sequence[str]) -> Completed:
    """The real runner: an argv list, no shell; a missing program is exit 127, not an exception."""
    try:
        # cwd "/": nothing the service manager runs may pick anything up from the user's current directory.
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT_S, cwd="/"
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{shlex.join(argv)}: no answer after {COMMAND_TIMEOUT_S:.0f}s")
    return Completed(proc.returncode, proc.stdout, proc.stderr)


# --- the machine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What install, uninstall and status need to know about the machine they run on."""

    platform: str  # "linux", "darwin", or another sys.platform value (unsupported)
    home: Path
    config_home: Path  # $XDG_CONFIG_HOME, else ~/.config
    tmpdir: str  # macOS: the per-user $TMPDIR
    uid: int
    daemon: Path | None  # absolute path of context-harnessd, None when not found
    environment: Mapping[str, str] = field(default_factory=dict)  # the shell's, for what the service must carry

    @classmethod
    def current(cls) -> Machine:
        home = Path.home()
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        config_home = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
        platform = "linux" if sys.platform.startswith("linux") else sys.platform
        return cls(
            platform=platform,
            home=home,
            config_home=config_home,
            tmpdir=os.environ.get("TMPDIR") or "/tmp/",
            uid=os.getuid(),
            daemon=find_daemon(),
            environment=dict(os.environ),
        )


def find_daemon() -> Path | None:
    """context-harnessd from the same installation as this chctl first, then from PATH.

    The sibling of sys.executable comes first so that a chctl run from one virtualenv (or pipx)
    installs that environment's daemon, not an older one that happens to be on PATH.
    """
    sibling = Path(sys.executable).parent / DAEMON_EXECUTABLE
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return sibling.absolute()
    # Only absolute PATH entries: an empty or `.` entry would install a `context-harnessd` planted in the
    # current directory as the login service.
    trusted = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p))
    found = shutil.which(DAEMON_EXECUTABLE, path=trusted)
    return Path(found).absolute() if found else None


# --- plans (the actions are in service_plan) -------------------------------------------------------


def _no_daemon() -> ServiceError:
    return ServiceError(
        Failure(
            f"{DAEMON_EXECUTABLE} not found next to {sys.executable} or on PATH",
            ErrorCode.NOT_FOUND,
            "install context-harness (e.g. `pipx install context-harness`) so context-harnessd exists",
        )
    )


class Systemd:
    """systemd user units. The socket unit is enabled so the socket exists from login, and the
    service too, so the refresher runs from login rather than on the first chctl connection."""

    def __init__(self, machine: Machine, runner: Runner) -> None:
        self.machine = machine
        self.runner = runner
        self.unit_dir = machine.config_home / "systemd" / "user"
        self.socket_file = self.unit_dir / units.SYSTEMD_SOCKET
        self.service_file = self.unit_dir / units.SYSTEMD_SERVICE

    def _systemctl(self, *args: str, may_fail: bool = False) -> Run:
        return Run(("systemctl", "--user", *args), may_fail)

    def check_available(self) -> None:
        # `show-environment` needs nothing but a reachable user manager: it fails with "Failed to
        # connect to bus" in containers and WSL without systemd, and is 127 when systemctl is absent.
        if self.runner(("systemctl", "--user", "show-environment")).returncode != 0:
            raise ServiceError(
                Failure("systemd user session not available", ErrorCode.UNSUPPORTED, NO_SERVICE_MANAGER_HINT)
            )

    def install_plan(self) -> list[Action]:
        if self.machine.daemon is None:
            raise _no_daemon()
        return [
            MakeDir(self.unit_dir),
            Write(self.socket_file, units.render_systemd_socket()),
            Write(self.service_file, units.render_systemd_service(self.machine.daemon)),
            self._systemctl("daemon-reload"),
            self._systemctl("enable", "--now", units.SYSTEMD_SOCKET, units.SYSTEMD_SERVICE),
        ]

    def installed_files(self) -> list[Path]:
        return [p for p in (self.socket_file, self.service_file) if p.exists()]

    def uninstall_plan(self) -> list[Action]:
        return [
            self._systemctl("disable", "--now", units.SYSTEMD_SERVICE, units.SYSTEMD_SOCKET, may_fail=True),
            *(Remove(p) for p in self.installed_files()),
            self._systemctl("daemon-reload"),
        ]

    def status_queries(self) -> list[Run]:
        return [
            self._systemctl(verb, unit)
            for verb in ("is-enabled", "is-active")
            for unit in (units.SYSTEMD_SOCKET, units.SYSTEMD_SERVICE)
        ]

    def status_lines(self) -> list[str]:
        def state(verb: str, unit: str) -> str:
            # is-enabled / is-active print the state on stdout and exit non-zero for "disabled",
            # "inactive" and the like; nothing on stdout means systemd does not know the unit.
            answer = self.runner(("systemctl", "--user", verb, unit)).stdout.strip()
            return answer.splitlines()[0] if answer else "unknown"

        files = self.installed_files()
        installed = "yes" if len(files) == 2 else ("partly" if files else "no")
        where = f" ({self.unit_dir})" if files else ""
        return [
            f"installed: {installed}{where}",
            "enabled:   "
            f"socket {state('is-enabled', units.SYSTEMD_SOCKET)}, "
            f"service {state('is-enabled', units.SYSTEMD_SERVICE)}",
            "running:   "
            f"socket {state('is-active', units.SYSTEMD_SOCKET)}, "
            f"service {state('is-active', units.SYSTEMD_SERVICE)}",
        ]


class Launchd:
    """A launchd agent in the user's GUI domain; the daemon binds CH_SOCKET itself."""

    def __init__(self, machine: Machine, runner: Runner) -> None:
        self.machine = machine
        self.runner = runner
        self.plist_file = machine.home / "Library" / "LaunchAgents" / units.LAUNCHD_PLIST
        self.log_dir = machine.home / "Library" / "Logs" / "context-harness"
        self.domain = f"gui/{machine.uid}"
        self.service_target = f"{self.domain}/{units.LAUNCHD_LABEL}"

    def check_available(self) -> None:
        """launchd is always there on macOS; its errors surface from the commands themselves."""

    def install_plan(self) -> list[Action]:
        if self.machine.daemon is None:
            raise _no_daemon()
        plist = units.render_launchd_plist(self.machine.daemon, self.machine.home, self.machine.tmpdir)
        return [
            MakeDir(self.plist_file.parent),
            MakeDir(self.log_dir),  # launchd opens the log file but does not create its directory
            Write(self.plist_file, plist),
            # bootstrap refuses a label that is already loaded: unload an earlier install first.
            Run(("launchctl", "bootout", self.service_target), may_fail=True),
            Run(("launchctl", "bootstrap", self.domain, str(self.plist_file))),
        ]

    def installed_files(self) -> list[Path]:
        return [self.plist_file] if self.plist_file.exists() else []

    def uninstall_plan(self) -> list[Action]:
        return [
            Run(("launchctl", "bootout", self.service_target), may_fail=True),
            *(Remove(p) for p in self.installed_files()),
        ]

    def status_queries(self) -> list[Run]:
        return [Run(("launchctl", "print", self.service_target))]

    def status_lines(self) -> list[str]:
        printed = self.runner(("launchctl", "print", self.service_target))
        fields = _launchctl_fields(printed.stdout) if printed.returncode == 0 else {}
        running = fields.get("state") == "running"
        pid = f" (pid {fields['pid']})" if running and "pid" in fields else ""
        return [
            f"installed: {'yes (' + str(self.plist_file) + ')' if self.installed_files() else 'no'}",
            f"enabled:   {'yes (loaded in ' + self.domain + ')' if printed.returncode == 0 else 'no'}",
            f"running:   {'yes' + pid if running else 'no'}",
        ]


def _launchctl_fields(printed: str) -> dict[str, str]:
    """The top-level `key = value` lines of `launchctl print` (nested blocks are indented deeper)."""
    fields: dict[str, str] = {}
    for line in printed.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, _, value = line.strip().partition(" = ")
            fields.setdefault(key, value)
    return fields


ServiceManager = Systemd | Launchd


def service_manager(machine: Machine, runner: Runner) -> ServiceManager:
    if machine.platform == "linux":
        return Systemd(machine, runner)
    if machine.platform == "darwin":
        return Launchd(machine, runner)
    raise ServiceError(
        Failure(
            f"no supported service manager on {machine.platform}",
            ErrorCode.UNSUPPORTED,
            NO_SERVICE_MANAGER_HINT,
        )
    )


# --- the CLI ------------------------------------------------------------------------------------------


def run_service(
    args: argparse.Namespace,
    *,
    machine: Machine | None = None,
    runner: Runner | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    running_daemon: Callable[[], int | None] | None = None,
) -> int:
    """Carry out `args.service_action`; returns the exit status (0 = done). `running_daemon`: the pid of the
    daemon that answers on the socket, or None (asked only by `status` where there is no service manager)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    runner = runner if runner is not None else run_command
    try:
        manager = service_manager(machine if machine is not None else Machine.current(), runner)
        _dispatch(manager, args.service_action, dry_run=bool(args.dry_run), runner=runner, out=out, err=err)
    except ServiceError as exc:
        failure = exc.failure
        if args.service_action == "status" and failure.code is ErrorCode.UNSUPPORTED and not args.dry_run:
            pid = (running_daemon or daemon_pid)()
            print(without_service_manager(failure.error, pid), file=out)
            return 0
        return print_error(failure.code, failure.error, failure.hint, file=err)
    return 0


def daemon_pid() -> int | None:
    """The pid of the daemon answering on this user's socket; None when none does (nothing is started)."""
    from context_harness.client.rpc_client import RpcError, call

    try:
        return int(call("daemon.status", autostart=False)["pid"])
    except (RpcError, OSError, KeyError, TypeError, ValueError):
        return None


def without_service_manager(reason: str, pid: int | None) -> str:
    """`chctl service status` where no service can be installed: whether the daemon runs anyway, and what to do."""
    daemon = (
        f"running, pid {pid}: started by chctl, not as a service (`chctl daemon stop` stops it)"
        if pid is not None
        else "not running: the next chctl command starts it (`chctl daemon start` starts it now)"
    )
    return (
        f"service:   none: {reason}\n"
        f"daemon:    {daemon}\n"
        "  note: `chctl service install` needs a user service manager: systemd's user session (a desktop or SSH\n"
        "  login on a systemd machine, not a container or WSL without systemd) or macOS's launchd"
    )


def _warn_if_unavailable(manager: ServiceManager, action: str, err: TextIO) -> None:
    """A dry run says first when the real run would stop at the availability check, and what to do instead."""
    try:
        manager.check_available()
    except ServiceError as exc:
        stop = f"`chctl service {action}` would stop with {error_tag(exc.failure.code)}"
        print(f"note: {exc.failure.error}: {stop}", file=err)
        if exc.failure.hint:
            print_hint(exc.failure.hint, file=err)


def _dispatch(manager: ServiceManager, action: str, *, dry_run: bool, runner: Runner, out: TextIO, err: TextIO) -> None:
    if action == "status":
        if dry_run:
            _warn_if_unavailable(manager, action, err)
            out.write(describe(manager.status_queries()))
            return
        manager.check_available()
        print("\n".join(manager.status_lines()), file=out)
        return

    carried: dict[str, str] = {}
    if action == "install":
        plan = manager.install_plan()
        carried = carried_variables(manager.machine.environment)
        if carried:
            plan = [*_carry_environment(manager.machine.home, carried), *plan]
    elif action == "uninstall":
        if not manager.installed_files():
            print("context-harness service is not installed", file=out)
            return
        plan = manager.uninstall_plan()
    else:
        raise ServiceError(Failure(f"unknown service action {action!r}", ErrorCode.INVALID_PARAMS))

    if dry_run:
        _warn_if_unavailable(manager, action, err)
        out.write(describe(plan))
        if carried:
            print(f"the service would get {', '.join(carried)} from this shell", file=out)
        return
    manager.check_available()
    execute(plan, runner, out=out, err=err)
    if carried:
        print(f"the service gets {', '.join(carried)} from this shell (in daemon.env)", file=out)


def _carry_environment(home: Path, carried: dict[str, str]) -> list[Action]:
    """Write the shell's proxy and CA variables into the service's daemon.env, keeping its other lines."""
    env_file = daemon_env_file(home)
    refused = _not_carried(carried)
    if refused is not None:
        raise ServiceError(refused)
    try:
        existing = env_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(
            Failure(f"cannot read {env_file}: {exc}", ErrorCode.PERMISSION_DENIED, "fix or remove the file")
        ) from exc
    content = updated_env_file(existing, carried)
    return [MakeDir(env_file.parent, private=True), Write(env_file, content, ENV_FILE_MODE, masked(content))]


def _not_carried(carried: dict[str, str]) -> Failure | None:
    """Why these values cannot go into daemon.env: a control character (what follows a line break would be
    read as a setting of its own), or a CA bundle others can change (the daemon would refuse to start)."""
    broken = control_character_in(carried)
    if broken is not None:
        return Failure(
            f"{broken} holds a control character: in daemon.env, what follows a line break would be read as a "
            "setting of its own",
            ErrorCode.INVALID_PARAMS,
            f"set {broken} to a value on one line (or unset it) in this shell, then run `chctl service install` again",
        )
    bundle = carried.get("CH_CA_BUNDLE")
    problem = untrusted_because(Path(bundle)) if bundle else None
    if bundle and problem:
        return Failure(
            f"refusing CH_CA_BUNDLE {bundle}: {problem}",
            ErrorCode.INVALID_PARAMS,
            "whoever can change it can make the daemon trust their own CA: copy it where only you can write "
            f"(`install -m 600 {bundle} ~/.context-harness/ca-bundle.pem`), set CH_CA_BUNDLE to the copy and run "
            "`chctl service install` again",
        )
    return None
