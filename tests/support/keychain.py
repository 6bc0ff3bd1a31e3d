"""A real keychain for the tests: a D-Bus session bus of the test's own and GNOME Keyring's Secret Service on it,
unlocked with a password, the way secretstorage's own CI runs it (`gnome-keyring-daemon --unlock`). `secret-tool`
(libsecret) reads what we stored, as a person would.

The bus activates nothing (no service directories): a Secret Service the test killed stays gone, rather than
coming back locked through D-Bus activation. `./scripts/test` installs `dbus`, `gnome-keyring` and
`libsecret-tools`; where they cannot run the tests that need them are skipped, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import wait_for
from tests.support.env import UserEnv

KEYRING_PASSWORD = "keychain-test-password"  # the login keyring's password: its file on disk is encrypted with it
START_DEADLINE_S = 10.0
SECRET_SERVICE_NAME = "org.freedesktop.secrets"
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def missing_tools() -> list[str]:
    tools = ("dbus-daemon", "dbus-send", "gnome-keyring-daemon", "secret-tool")
    return [t for t in tools if shutil.which(t) is None]


@dataclass
class SessionKeychain:
    root: Path
    home: Path  # the keyring's files go to HOME/.local/share/keyrings, as a user's do
    bus: subprocess.Popen[bytes] | None = None
    address: str = ""
    keyring: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """What the daemon and chctl need to reach this keychain."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def start_bus(self) -> None:
        socket_path = self.root / "bus"
        config = self.root / "bus.conf"
        config.write_text(BUS_CONFIG.format(path=socket_path))
        log = self.root / "dbus.log"
        self.logs.append(log)
        with log.open("wb") as err:
            self.bus = subprocess.Popen(
                ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        assert self.bus.stdout is not None
        self.address = self.bus.stdout.readline().decode().strip()
        if not self.address:
            raise RuntimeError(f"dbus-daemon printed no address: {log.read_text()}")

    def start_keyring(self) -> None:
        """GNOME Keyring's Secret Service, unlocked; returns once it owns its name on the bus."""
        log = self.root / f"gnome-keyring-{time.monotonic_ns()}.log"
        self.logs.append(log)
        env = {
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            "XDG_RUNTIME_DIR": str(self.root),
            "PATH": os.environ.get("PATH", ""),
            **self.env(),
        }
        with log.open("wb") as out:
            self.keyring = subprocess.Popen(
                ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                env=env,
            )
        assert self.keyring.stdin is not None
        self.keyring.stdin.write(KEYRING_PASSWORD.encode())
        self.keyring.stdin.close()
        wait_for(lambda: self.answers() or self.keyring.poll() is not None, START_DEADLINE_S, what="Secret Service")
        if self.keyring.poll() is not None:
            raise RuntimeError(f"gnome-keyring-daemon exited: {log.read_text()}")

    def answers(self) -> bool:
        """The Secret Service owns its name on the bus."""
        done = subprocess.run(
            ["dbus-send", f"--bus={self.address}", "--print-reply", "--dest=org.freedesktop.DBus", "/",
             "org.freedesktop.DBus.NameHasOwner", f"string:{SECRET_SERVICE_NAME}"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        return "boolean true" in done.stdout

    def lookup(self, service: str, key: str) -> str | None:
        """The password of our item for `key`, as `secret-tool` reads it; None when there is none."""
        done = subprocess.run(
            ["secret-tool", "lookup", "service", service, "username", key],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout if done.returncode == 0 and done.stdout else None

    def clear(self, service: str, key: str) -> None:
        """Delete our item for `key`, as a person would with `secret-tool clear` (or Seahorse)."""
        subprocess.run(
            ["secret-tool", "clear", "service", service, "username", key],
            env={**os.environ, **self.env()},
            capture_output=True,
            timeout=10,
            check=True,
        )

    def kill_keyring(self) -> None:
        if self.keyring is not None and self.keyring.poll() is None:
            self.keyring.kill()
            self.keyring.wait(10)

    def freeze_keyring(self) -> None:
        """SIGSTOP: the Secret Service still owns its name, and answers nothing (a hung or locked keychain)."""
        assert self.keyring is not None
        self.keyring.send_signal(signal.SIGSTOP)

    def thaw_keyring(self) -> None:
        assert self.keyring is not None
        self.keyring.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.keyring is not None and self.keyring.poll() is None:
            self.keyring.send_signal(signal.SIGCONT)
        self.kill_keyring()
        if self.bus is not None and self.bus.poll() is None:
            self.bus.terminate()
            try:
                self.bus.wait(10)
            except subprocess.TimeoutExpired:
                self.bus.kill()
                self.bus.wait()
        if self.bus is not None and self.bus.stdout is not None:
            self.bus.stdout.close()


def start_session_keychain(root: Path, home: Path) -> SessionKeychain:
    """A bus and an unlocked Secret Service, or a skip naming what cannot run here."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"gnome-keyring cannot run here: {', '.join(missing)} not installed (./scripts/test installs them)")
    root.mkdir(parents=True, exist_ok=True)
    keychain = SessionKeychain(root=root, home=home)
    try:
        keychain.start_bus()
        keychain.start_keyring()
    except (OSError, RuntimeError, AssertionError) as exc:
        keychain.stop()
        pytest.skip(f"gnome-keyring cannot run here: {exc}")
    return keychain


@pytest.fixture
def keychain(user_env: UserEnv) -> Iterator[SessionKeychain]:
    """A bus and an unlocked Secret Service of the test's own (a plugin of tests/conftest.py)."""
    started = start_session_keychain(user_env.root / "kc", user_env.home)
    yield started
    started.stop()


def files_holding(root: Path, values: list[str]) -> list[str]:
    """Every file under `root` that holds one of `values` (as bytes), named with the value's index."""
    found = []
    needles = [(i, v.encode()) for i, v in enumerate(values) if v]
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path} holds value #{i}" for i, needle in needles if needle in data]
    return found


@dataclass
class StoreUnderTest:
    """One value of CH_SECRET_STORE for a test that runs with each: the daemon's environment, and where to read
    what it stored."""

    env: dict[str, str]
    keychain: SessionKeychain | None = None

    def stored(self, ch_home: Path, name: str) -> dict[str, Any]:
        """`name`'s token file with the secret values filled in from wherever they rest."""
        record: dict[str, Any] = json.loads((ch_home / "tokens" / f"{name}.json").read_text())
        ref = record.get("secret_ref")
        if ref is None or self.keychain is None:
            return record
        raw = self.keychain.lookup(ref["service"], ref["key"])
        values = json.loads(raw) if raw else {}
        tokens = {**record.get("tokens", {}), **{k: values.get(k) for k in ("access_token", "refresh_token")}}
        return {**record, "api_key": values.get("api_key"), "tokens": tokens}


def store_under_test(kind: str, root: Path, home: Path) -> StoreUnderTest:
    if kind == "file":
        return StoreUnderTest({"CH_SECRET_STORE": "file"})
    keychain = start_session_keychain(root, home)
    return StoreUnderTest({**keychain.env(), "CH_SECRET_STORE": kind}, keychain)
