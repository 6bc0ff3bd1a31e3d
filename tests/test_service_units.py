"""Unit files (systemd, launchd) and `chctl service install | uninstall | status`."""

from __future__ import annotations

import argparse
import io
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from context_harness import service_units as units
from context_harness.client.service import (
    Completed,
    Machine,
    find_daemon,
    run_command,
    run_service,
)
from context_harness.client.service_args import add_service_arguments

REPO = Path(__file__).resolve().parents[1]
EXPECTED_COMMANDS_LINUX_INSTALL = [
    ("systemctl", "--user", "show-environment"),
    ("systemctl", "--user", "daemon-reload"),
    ("systemctl", "--user", "enable", "--now", "context-harness.socket", "context-harness.service"),
]


# --- the templates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("human_copy", "name"),
    [
        ("systemd/context-harness.socket", units.SYSTEMD_SOCKET),
        ("systemd/context-harness.service", units.SYSTEMD_SERVICE),
        ("launchd/ai.context-harness.daemon.plist", units.LAUNCHD_PLIST),
    ],
)
def test_packaged_templates_equal_the_repository_copies(human_copy: str, name: str) -> None:
    assert (REPO / human_copy).read_text() == units.template(name)


def _directives(text: str) -> dict[tuple[str, str], str]:
    """`(section, key) -> value` of a systemd unit, for asserting what it says."""
    section, found = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[(section, key)] = value
    return found


def test_socket_unit_owns_a_private_socket_in_the_runtime_dir() -> None:
    d = _directives(units.render_systemd_socket())
    assert d[("Socket", "ListenStream")] == "%t/context-harness/chd.sock"
    assert d[("Socket", "SocketMode")] == "0600"
    assert d[("Socket", "DirectoryMode")] == "0700"
    assert d[("Install", "WantedBy")] == "sockets.target"


def test_service_unit_is_notify_restarting_hardened_and_writes_only_home() -> None:
    d = _directives(units.render_systemd_service(Path("/opt/ch/bin/context-harnessd")))
    assert d[("Service", "Type")] == "notify"
    assert d[("Service", "ExecStart")] == '"/opt/ch/bin/context-harnessd"'
    assert d[("Service", "ExecReload")] == "/bin/kill -HUP $MAINPID"
    assert d[("Service", "Restart")] == "on-failure"
    assert d[("Service", "Environment")] == "CH_SOCKET=%t/context-harness/chd.sock"
    assert d[("Unit", "Requires")] == d[("Unit", "After")] == "context-harness.socket"
    assert d[("Service", "NoNewPrivileges")] == "yes"
    assert d[("Service", "PrivateTmp")] == "yes"
    assert d[("Service", "ProtectSystem")] == "strict"
    assert d[("Service", "ReadWritePaths")].split() == ["%h", "-%t/context-harness"]
    assert d[("Service", "UMask")] == "0077"
    assert ("Service", "ProtectHome") not in d  # would stop the daemon writing project configs
    assert ("Service", "PrivateUsers") not in d  # set explicitly, it fails where user namespaces are off
    assert d[("Install", "WantedBy")] == "default.target"


SECCOMP_HARDENING = {
    "SystemCallFilter": "@system-service",
    "SystemCallErrorNumber": "EPERM",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "MemoryDenyWriteExecute": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "PrivateDevices": "yes",
}


def test_service_unit_filters_system_calls_address_families_and_namespaces() -> None:
    d = _directives(units.render_systemd_service(Path("/opt/ch/bin/context-harnessd")))
    assert {key: d.get(("Service", key)) for key in SECCOMP_HARDENING} == SECCOMP_HARDENING


def test_systemd_analyze_security_rates_the_service_ok(tmp_path: Path) -> None:
    """8.8 EXPOSED before the seccomp settings; 4.3 OK with them (systemd 252, offline analysis)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    _write_units(tmp_path / "units", Path(sys.executable))
    (tmp_path / "run").mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--user", str(tmp_path / "units" / units.SYSTEMD_SERVICE)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    assert "Overall exposure level" in last, done.stdout + done.stderr
    score = float(last.split(":")[1].split()[0])
    assert score <= 5.0, last


def test_rendering_leaves_no_placeholder() -> None:
    rendered = units.render_systemd_service(Path("/x")) + units.render_launchd_plist(
        Path("/x"), Path("/Users/u"), "/var/folders/ab/T"
    )
    assert "@" not in rendered.replace("@ signs", "").replace("=@system-service", "")


def _verify(unit_dir: Path, runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    # --user needs a runtime dir to resolve %t; none exists as root in a container, so give it one.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)}
    return subprocess.run(
        [
            "systemd-analyze",
            "--user",
            "verify",
            str(unit_dir / units.SYSTEMD_SOCKET),
            str(unit_dir / units.SYSTEMD_SERVICE),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _write_units(unit_dir: Path, daemon: Path) -> None:
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / units.SYSTEMD_SOCKET).write_text(units.render_systemd_socket())
    (unit_dir / units.SYSTEMD_SERVICE).write_text(units.render_systemd_service(daemon))


def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    _write_units(tmp_path / "units", Path(sys.executable))
    result = _verify(tmp_path / "units", tmp_path / "run")
    # verify exits 0 on unknown keys too (it only warns), so the output must be empty as well.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_daemon_path_with_space_percent_and_dollar_is_quoted_for_systemd(tmp_path: Path) -> None:
    daemon = tmp_path / "odd dir %h $HOME" / "context-harnessd"
    daemon.parent.mkdir()
    daemon.write_text("#!/bin/sh\n")
    daemon.chmod(0o755)
    _write_units(tmp_path / "units", daemon)
    result = _verify(tmp_path / "units", tmp_path / "run")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """Guards the two tests above: verify really checks ExecStart."""
    _write_units(tmp_path / "units", tmp_path / "no-such-daemon")
    result = _verify(tmp_path / "units", tmp_path / "run")
    assert result.returncode != 0
    assert "no-such-daemon" in result.stderr


def test_plist_parses_and_has_the_agent_keys() -> None:
    daemon = Path("/Users/u/.local/bin/context-harnessd")
    plist = plistlib.loads(units.render_launchd_plist(daemon, Path("/Users/u"), "/var/folders/ab/cd/T/").encode())
    assert plist["Label"] == "ai.context-harness.daemon"
    assert plist["ProgramArguments"] == [str(daemon)]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["StandardOutPath"] == "/Users/u/Library/Logs/context-harness/daemon.log"
    assert plist["StandardErrorPath"] == "/Users/u/Library/Logs/context-harness/daemon.log"
    assert plist["EnvironmentVariables"] == {"CH_SOCKET": "/var/folders/ab/cd/T/context-harness/chd.sock"}


def test_plist_values_are_xml_escaped_and_tmpdir_gets_its_slash() -> None:
    plist = plistlib.loads(units.render_launchd_plist(Path("/Apps/A&B <x>/chd"), Path("/Users/u"), "/tmp/T").encode())
    assert plist["ProgramArguments"] == ["/Apps/A&B <x>/chd"]
    assert plist["EnvironmentVariables"]["CH_SOCKET"] == "/tmp/T/context-harness/chd.sock"


# --- chctl service ---------------------------------------------------------------------------------


class FakeRunner:
    """Records each argv; answers from `answers` (argv prefix -> Completed), else success."""

    def __init__(self, answers: dict[tuple[str, ...], Completed] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str]) -> Completed:
        self.calls.append(tuple(argv))
        for prefix, answer in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return answer
        return Completed(0)


NO_BUS = Completed(1, "", "Failed to connect to bus: No medium found\n")


def _machine(
    tmp_path: Path, platform: str = "linux", daemon: Path | None = Path("/opt/ch/context-harnessd")
) -> Machine:
    return Machine(
        platform=platform,
        home=tmp_path / "home",
        config_home=tmp_path / "home" / ".config",
        tmpdir="/var/folders/ab/T/",
        uid=501,
        daemon=daemon,
    )


def _run(
    action: str, machine: Machine, runner: FakeRunner | None = None, dry_run: bool = False
) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="chctl")
    add_service_arguments(parser.add_subparsers(dest="command"), run_service)
    args = parser.parse_args(["service", action, *(["--dry-run"] if dry_run else [])])
    assert args.func is run_service
    out, err = io.StringIO(), io.StringIO()
    code = run_service(args, machine=machine, runner=runner or FakeRunner(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_install_dry_run_prints_exactly_the_files_and_commands_and_changes_nothing(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    runner = FakeRunner()
    code, out, _ = _run("install", machine, runner, dry_run=True)
    unit_dir = tmp_path / "home/.config/systemd/user"
    assert code == 0
    assert out == (
        f"would create directory {unit_dir}\n"
        f"would write {unit_dir}/context-harness.socket:\n{units.render_systemd_socket()}"
        f"would write {unit_dir}/context-harness.service:\n"
        f"{units.render_systemd_service(Path('/opt/ch/context-harnessd'))}"
        "would run: systemctl --user daemon-reload\n"
        "would run: systemctl --user enable --now context-harness.socket context-harness.service\n"
    )
    assert runner.calls == [("systemctl", "--user", "show-environment")]  # the read-only availability probe
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("action", ["install", "status"])
def test_a_dry_run_without_a_systemd_user_session_says_so_up_front_with_what_to_run_instead(
    tmp_path: Path, action: str
) -> None:
    runner = FakeRunner({("systemctl", "--user", "show-environment"): NO_BUS})
    code, out, err = _run(action, _machine(tmp_path), runner, dry_run=True)
    assert code == 0
    assert err.splitlines() == [
        f"note: systemd user session not available: `chctl service {action}` would stop with error[UNSUPPORTED]",
        "  hint: run the daemon without a service manager: chctl daemon start",
    ]
    assert out.startswith("would ")
    assert not (tmp_path / "home").exists()


def test_install_writes_the_units_then_reloads_and_enables(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    runner = FakeRunner()
    code, out, err = _run("install", machine, runner)
    unit_dir = tmp_path / "home/.config/systemd/user"
    assert (code, err) == (0, "")
    assert _files_under(tmp_path) == [unit_dir / "context-harness.service", unit_dir / "context-harness.socket"]
    service = unit_dir / "context-harness.service"
    assert service.read_text() == units.render_systemd_service(Path("/opt/ch/context-harnessd"))
    assert stat.S_IMODE(service.stat().st_mode) == 0o644
    assert runner.calls == EXPECTED_COMMANDS_LINUX_INSTALL
    assert "ran: systemctl --user enable --now" in out


def test_install_honours_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert Machine.current().config_home == tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert Machine.current().config_home == Path.home() / ".config"


@pytest.mark.parametrize("action", ["install", "uninstall"])
@pytest.mark.parametrize(
    "probe", [NO_BUS, Completed(127, "", "systemctl: command not found")], ids=["no-bus", "no-systemctl"]
)
def test_without_systemd_user_session_says_unsupported_and_suggests_daemon_start(
    tmp_path: Path, action: str, probe: Completed
) -> None:
    machine = _machine(tmp_path)
    if action == "uninstall":  # uninstall of nothing is a no-op, so give it something to remove
        unit_dir = tmp_path / "home/.config/systemd/user"
        unit_dir.mkdir(parents=True)
        (unit_dir / units.SYSTEMD_SOCKET).write_text("x")
    runner = FakeRunner({("systemctl", "--user", "show-environment"): probe})
    code, out, err = _run(action, machine, runner)
    assert code != 0
    assert err.splitlines() == [
        "error[UNSUPPORTED]: systemd user session not available",
        "  hint: run the daemon without a service manager: chctl daemon start",
    ]
    assert runner.calls == [("systemctl", "--user", "show-environment")]
    assert not (tmp_path / "home/.config/systemd/user/context-harness.service").exists()


@pytest.mark.parametrize("pid", [4242, None], ids=["daemon-running", "no-daemon"])
def test_status_without_a_service_manager_says_whether_the_daemon_runs_and_what_a_service_needs(
    tmp_path: Path, pid: int | None
) -> None:
    for machine, runner in [
        (_machine(tmp_path), FakeRunner({("systemctl", "--user", "show-environment"): NO_BUS})),
        (_machine(tmp_path, platform="win32"), FakeRunner()),
    ]:
        code, out, err = _run_real("status", machine, runner, lambda: pid)
        assert (code, err) == (0, "")
        service, daemon, *note = out.splitlines()
        assert service.startswith("service:   none: ")
        if pid is None:
            assert daemon.startswith("daemon:    not running") and "`chctl daemon start`" in daemon
        else:
            assert daemon.startswith("daemon:    running, pid 4242: started by chctl, not as a service")
        assert "`chctl service install` needs a user service manager" in " ".join(note)


def test_this_machine_without_a_user_session_reports_it_and_the_daemon(tmp_path: Path) -> None:
    """The real runner on the real machine: containers like CI's have no systemd user session."""
    if run_command(["systemctl", "--user", "show-environment"]).returncode == 0:
        pytest.skip("this machine has a systemd user session")
    code, out, _ = _run_real("status", _machine(tmp_path), None, lambda: None)
    assert code == 0
    assert out.startswith("service:   none: systemd user session not available\n")


def _run_real(
    action: str, machine: Machine, runner: FakeRunner | None, running_daemon: Callable[[], int | None]
) -> tuple[int, str, str]:
    args = argparse.Namespace(service_action=action, dry_run=False)
    out, err = io.StringIO(), io.StringIO()
    code = run_service(args, machine=machine, runner=runner, out=out, err=err, running_daemon=running_daemon)
    return code, out.getvalue(), err.getvalue()


def test_a_failing_systemctl_command_is_reported_with_its_reason(tmp_path: Path) -> None:
    runner = FakeRunner({("systemctl", "--user", "enable"): Completed(1, "", "Failed to enable unit: Access denied\n")})
    code, _, err = _run("install", _machine(tmp_path), runner)
    assert code == 1
    first, hint = err.splitlines()
    assert first.startswith("error[INTERNAL]: systemctl --user enable --now context-harness.socket")
    assert first.endswith("failed with exit 1: Failed to enable unit: Access denied")
    assert hint.startswith("  hint: ")


def test_install_without_context_harnessd_is_not_found(tmp_path: Path) -> None:
    code, _, err = _run("install", _machine(tmp_path, daemon=None), dry_run=True)
    assert code == 1
    assert err.startswith("error[NOT_FOUND]: context-harnessd not found")


def test_unsupported_platform(tmp_path: Path) -> None:
    code, _, err = _run("install", _machine(tmp_path, platform="win32"))
    assert code == 1
    assert err.startswith("error[UNSUPPORTED]: no supported service manager on win32\n")


def test_uninstall_disables_removes_and_reloads(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    assert _run("install", machine)[0] == 0
    runner = FakeRunner()
    code, _, err = _run("uninstall", machine, runner)
    assert (code, err) == (0, "")
    assert _files_under(tmp_path) == []
    assert runner.calls == [
        ("systemctl", "--user", "show-environment"),
        ("systemctl", "--user", "disable", "--now", "context-harness.service", "context-harness.socket"),
        ("systemctl", "--user", "daemon-reload"),
    ]


def test_uninstall_goes_on_when_disable_fails(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    assert _run("install", machine)[0] == 0
    runner = FakeRunner({("systemctl", "--user", "disable"): Completed(1, "", "Unit not loaded\n")})
    code, _, err = _run("uninstall", machine, runner)
    assert code == 0
    assert "warning: systemctl --user disable" in err
    assert _files_under(tmp_path) == []


def test_uninstall_dry_run_lists_removals_and_commands(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    assert _run("install", machine)[0] == 0
    code, out, _ = _run("uninstall", machine, dry_run=True)
    unit_dir = tmp_path / "home/.config/systemd/user"
    assert code == 0
    assert out == (
        "would run: systemctl --user disable --now context-harness.service context-harness.socket\n"
        f"would remove {unit_dir}/context-harness.socket\n"
        f"would remove {unit_dir}/context-harness.service\n"
        "would run: systemctl --user daemon-reload\n"
    )
    assert len(_files_under(tmp_path)) == 2


def test_uninstall_when_not_installed_is_a_no_op(tmp_path: Path) -> None:
    runner = FakeRunner()
    code, out, _ = _run("uninstall", _machine(tmp_path), runner)
    assert (code, out, runner.calls) == (0, "context-harness service is not installed\n", [])


def test_status_reports_installed_enabled_running(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    assert _run("install", machine)[0] == 0
    runner = FakeRunner(
        {
            ("systemctl", "--user", "is-enabled"): Completed(0, "enabled\n"),
            ("systemctl", "--user", "is-active", "context-harness.socket"): Completed(0, "active\n"),
            ("systemctl", "--user", "is-active", "context-harness.service"): Completed(3, "inactive\n"),
        }
    )
    code, out, _ = _run("status", machine, runner)
    assert code == 0
    assert out.splitlines() == [
        f"installed: yes ({tmp_path / 'home/.config/systemd/user'})",
        "enabled:   socket enabled, service enabled",
        "running:   socket active, service inactive",
    ]


def test_status_when_nothing_is_installed(tmp_path: Path) -> None:
    runner = FakeRunner({("systemctl", "--user", "is-"): Completed(1, "", "No such file or directory\n")})
    code, out, _ = _run("status", _machine(tmp_path), runner)
    assert code == 0
    assert out.splitlines()[0] == "installed: no"
    assert "socket unknown" in out


# --- macOS ------------------------------------------------------------------------------------------


def test_macos_install_dry_run_prints_the_plist_and_launchctl_commands(tmp_path: Path) -> None:
    machine = _machine(tmp_path, platform="darwin")
    runner = FakeRunner()
    code, out, _ = _run("install", machine, runner, dry_run=True)
    home = tmp_path / "home"
    plist = units.render_launchd_plist(Path("/opt/ch/context-harnessd"), home, "/var/folders/ab/T/")
    assert code == 0
    assert out == (
        f"would create directory {home}/Library/LaunchAgents\n"
        f"would create directory {home}/Library/Logs/context-harness\n"
        f"would write {home}/Library/LaunchAgents/ai.context-harness.daemon.plist:\n{plist}"
        "would run: launchctl bootout gui/501/ai.context-harness.daemon\n"
        f"would run: launchctl bootstrap gui/501 {home}/Library/LaunchAgents/ai.context-harness.daemon.plist\n"
    )
    assert runner.calls == []
    assert not home.exists()


def test_macos_install_bootstraps_even_when_nothing_was_loaded(tmp_path: Path) -> None:
    machine = _machine(tmp_path, platform="darwin")
    runner = FakeRunner({("launchctl", "bootout"): Completed(3, "", "Boot-out failed: 3: No such process\n")})
    code, _, _ = _run("install", machine, runner)
    home = tmp_path / "home"
    assert code == 0
    assert (home / "Library/Logs/context-harness").is_dir()
    plist = home / "Library/LaunchAgents" / units.LAUNCHD_PLIST
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == ["/opt/ch/context-harnessd"]
    assert runner.calls == [
        ("launchctl", "bootout", "gui/501/ai.context-harness.daemon"),
        ("launchctl", "bootstrap", "gui/501", str(plist)),
    ]


LAUNCHCTL_PRINT = """gui/501/ai.context-harness.daemon = {
\tactive count = 1
\tpath = /Users/u/Library/LaunchAgents/ai.context-harness.daemon.plist
\tstate = running

\tprogram = /opt/ch/context-harnessd
\tenvironment = {
\t\tCH_SOCKET => /var/folders/ab/T/context-harness/chd.sock
\t}
\tpid = 4242
}
"""


def test_macos_status_reads_launchctl_print(tmp_path: Path) -> None:
    machine = _machine(tmp_path, platform="darwin")
    assert _run("install", machine)[0] == 0
    runner = FakeRunner({("launchctl", "print"): Completed(0, LAUNCHCTL_PRINT)})
    code, out, _ = _run("status", machine, runner)
    assert code == 0
    assert runner.calls == [("launchctl", "print", "gui/501/ai.context-harness.daemon")]
    assert out.splitlines()[1:] == ["enabled:   yes (loaded in gui/501)", "running:   yes (pid 4242)"]


def test_macos_status_when_not_loaded(tmp_path: Path) -> None:
    runner = FakeRunner({("launchctl", "print"): Completed(113, "", "Could not find service\n")})
    code, out, _ = _run("status", _machine(tmp_path, platform="darwin"), runner)
    assert code == 0
    assert out.splitlines() == ["installed: no", "enabled:   no", "running:   no"]


def test_run_command_reports_a_missing_program_as_127() -> None:
    assert run_command(["context-harness-no-such-program"]).returncode == 127


def test_a_context_harnessd_planted_in_the_current_directory_is_never_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / "downloads"
    planted.mkdir()
    fake = planted / "context-harnessd"
    fake.write_text("#!/bin/sh\necho pwned\n")
    fake.chmod(0o755)
    monkeypatch.chdir(planted)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python3"))  # no sibling daemon
    for path in ("", ".", "bin:."):
        monkeypatch.setenv("PATH", path + os.pathsep + "/nonexistent")
        assert find_daemon() is None
