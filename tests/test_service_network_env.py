"""`chctl service install` carries the shell's proxy and CA variables to the service (which does not inherit the
shell's environment): into the daemon's own daemon.env (mode 0600: a proxy URL may hold a password), saying
which, and a dry run shows them with the password masked."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import trustme

from context_harness.daemon.settings import Settings, settings_file
from context_harness.net.proxies import from_variables, read_env_file
from tests.support.daemon import chctl
from tests.support.env import UserEnv
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
