"""The laptop's daemon used from "another machine" through a real OpenSSH `RemoteForward` of its remote socket.

The other machine is a second local user with its own HOME and its own daemon (`CH_DELEGATE_SOCKET` set to the
forwarded path), reached through an `sshd` of the test's own on 127.0.0.1 (throw-away host key, key auth only,
no PAM). The laptop is this test process's user (root).

Which uid checks apply where:
- laptop: `ssh` runs as the laptop user and connects to `remote.sock`; the laptop daemon's peer-uid rule sees its
  own uid, so it answers (another local user's `ssh` would be refused);
- remote: `sshd` creates the forwarded socket as the remote user (in that user's 0700 CH_HOME) and the remote
  daemon, the same user, connects to it; the remote daemon's own `chd.sock` keeps its uid rule for the remote
  user's `chctl` and agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from context_harness.config.jsonc import parse_jsonc
from tests.peers.mcp_servers import McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, rpc, socket_answers, wait_for
from tests.support.env import UserEnv, make_user_env
from tests.support.headless_login import log_in_headless
from tests.support.opencode import OFFLINE, OPENCODE_BIN, parse_mcp_list
from tests.test_bridge import call, free_port, messages_of, open_for_writing

SSHD = Path("/usr/sbin/sshd")
TOKEN_LIFETIME_S = 4
NOT_REMOTE = "not available remotely"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the remote machine is a second local user, and sshd runs as root"
    missing = [t for t in ("ssh", "ssh-keygen", "useradd", "userdel", "setpriv") if shutil.which(t) is None]
    if not SSHD.exists():
        missing.append(str(SSHD))
    return f"OpenSSH or user tools missing ({', '.join(missing)}): ./scripts/test installs them" if missing else None


SKIP_REASON = _skip_reason()
if SKIP_REASON:
    print(f"tests/test_remote_ssh.py skipped: {SKIP_REASON}", file=sys.stderr)
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@dataclass
class RemoteUser:
    name: str
    uid: int
    gid: int
    env: UserEnv
    python: str  # its own install: a venv of the system Python that sees this checkout and its packages

    @property
    def wrapper(self) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    @property
    def delegate(self) -> Path:
        return self.env.ch_home / "delegate.sock"

    def vars(self) -> dict[str, str]:
        return {**self.env.vars(), "USER": self.name, "LOGNAME": self.name, "CH_DELEGATE_SOCKET": str(self.delegate)}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.wrapper, *argv],
            env={**self.vars(), "CH_NO_AUTOSTART": "1", **OFFLINE},
            cwd=self.env.project,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def chctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "context_harness.client.chctl", *args)


@pytest.fixture(scope="module")
def remote_user() -> Iterator[RemoteUser]:
    name = f"chr{secrets.token_hex(3)}"
    root = Path("/home") / name
    subprocess.run(["useradd", "--create-home", "--home-dir", str(root), "--shell", "/bin/sh", name], check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)  # no password, but not locked: sshd lets keys in
    try:
        entry = pwd.getpwnam(name)
        env = make_user_env(root)
        env.ch_home.mkdir(mode=0o700)
        python = own_python(root / "venv")
        for path in [root, *root.rglob("*")]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)
        user = RemoteUser(name, entry.pw_uid, entry.pw_gid, env, python)
        works = user.run(python, "-c", "import context_harness.daemon.app")
        if works.returncode != 0:
            pytest.skip(f"the second user cannot run this checkout with {python}: {works.stderr[-300:]}")
        yield user
    finally:
        end_processes_of(name)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def own_python(venv: Path) -> str:
    """This test's interpreter may live where another user cannot reach it (pyenv under /root): the remote user
    gets a venv of the system Python of the same version, seeing this checkout and the test venv's packages."""
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip(f"no system python{sys.version_info.major}.{sys.version_info.minor} for the second user")
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "checkout.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{Path(__file__).parents[1] / 'src'}\n")
    return str(venv / "bin" / "python")


def end_processes_of(user: str) -> None:
    """What the test ran as the throw-away user (and sshd's sessions for it), by process id, before userdel."""
    uid = pwd.getpwnam(user).pw_uid
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        if str(uid) in uids or cmdline.startswith(f"sshd: {user}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


@dataclass
class Sshd:
    port: int
    key: Path  # the laptop user's private key
    known_hosts: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def sshd(remote_user: RemoteUser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    work = tmp_path_factory.mktemp("sshd")
    host_key, user_key = work / "host_ed25519", work / "laptop_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = remote_user.env.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    authorized.chmod(0o600)
    for path in (ssh_dir, authorized):
        os.chown(path, remote_user.uid, remote_user.gid)
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                "PidFile none",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                f"AuthorizedKeysFile {authorized}",  # the test's HOME for that user, below its passwd home
                "StrictModes no",  # the throw-away HOME's parents are not what StrictModes expects
                f"AllowUsers {remote_user.name}",
                "AllowStreamLocalForwarding yes",
                "StreamLocalBindUnlink yes",  # what `chctl remote ssh-config` tells you to set on the server
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    # sshd's privilege-separation directory. Left in place afterwards: it is the system's own (Debian's
    # openssh-server makes it at boot), and removing it under another sshd makes that one reset every new
    # connection (two suites side by side did).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (work / "sshd.log").open("wb")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        wait_for(lambda: _port_open(port) or proc.poll() is not None, 15, what="sshd")
        assert proc.poll() is None, (work / "sshd.log").read_text()
        yield Sshd(port, user_key, known_hosts, proc)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_forward(sshd: Sshd, remote_user: RemoteUser, laptop: UserEnv) -> subprocess.Popen[bytes]:
    """`ssh -R` as the laptop user: the laptop's remote.sock appears on the remote side at the delegate path."""
    forward = f"{remote_user.delegate}:{laptop.socket.parent / 'remote.sock'}"
    argv = ["ssh", "-F", "/dev/null", "-i", str(sshd.key), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    argv += ["-o", "ExitOnForwardFailure=yes", "-N", "-p", str(sshd.port), "-R", forward]
    proc = subprocess.Popen([*argv, f"{remote_user.name}@127.0.0.1"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The forwarded socket is there and carries a request through to the laptop's daemon.
    wait_for(lambda: _delegate_answers(remote_user) or proc.poll() is not None, 30, 0.1, what="the forward")
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


def _delegate_answers(remote_user: RemoteUser) -> bool:
    if not socket_answers(remote_user.delegate):
        return False
    reply = rpc(remote_user.delegate, {"jsonrpc": "2.0", "id": 1, "method": "daemon.status"})
    return bool(reply and "result" in reply)


def stop_forward(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


@dataclass
class World:
    laptop: UserEnv
    laptop_daemon: DaemonProcess
    remote: RemoteUser
    remote_daemon: DaemonProcess
    sshd: Sshd
    provider: OidcProvider
    server: McpOAuthServer
    forward: subprocess.Popen[bytes]
    auth_output: str


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    remote_user: RemoteUser,
    sshd: Sshd,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
) -> Iterator[World]:
    provider = oidc_provider_factory(access_token_ttl=TOKEN_LIFETIME_S, refresh_token_ttl=7200)
    server = mcp_oauth_server_factory(provider)
    laptop = make_user_env(Path(tmp_path_factory.mktemp("laptop")))
    laptop_daemon = DaemonProcess(laptop).start()
    remote_daemon = DaemonProcess(
        remote_user.env, extra_env=remote_user.vars(), wrapper=remote_user.wrapper, python=remote_user.python
    )
    forward: subprocess.Popen[bytes] | None = None
    try:
        assert chctl(laptop, "init").returncode == 0
        for name in ("srv", "other"):
            done = chctl(laptop, "add", name, "--bridge", "--url", server.url)
            assert done.returncode == 0, done.stderr
        assert chctl(laptop, "share", "srv").returncode == 0
        remote_daemon.start()
        forward = start_forward(sshd, remote_user, laptop)
        # On the remote: the server by its name alone, then the login, which runs on the laptop.
        assert remote_user.chctl("init").returncode == 0
        for name in ("srv", "other"):
            done = remote_user.chctl("add", name, "--client", "opencode")
            assert done.returncode == 0, done.stderr
        output = log_in_remote(remote_user)
        yield World(laptop, laptop_daemon, remote_user, remote_daemon, sshd, provider, server, forward, output)
    finally:
        if forward is not None:
            stop_forward(forward)
        if remote_daemon.proc is not None:
            remote_daemon.stop()
        laptop_daemon.stop()


def log_in_remote(remote_user: RemoteUser) -> str:
    """`chctl auth srv` on the remote: it prints the laptop's URL; the (fake) browser on the laptop consents."""
    chctl_argv = [remote_user.python, "-m", "context_harness.client.chctl"]
    argv = [*remote_user.wrapper, *chctl_argv, "auth", "srv", "--no-browser"]
    env = {**remote_user.vars(), "CH_NO_AUTOSTART": "1"}
    return log_in_headless(argv, env, remote_user.env.project, rb"(https?://\S+/auth\?\S+)")


def laptop_tokens(world: World) -> set[str]:
    stored = json.loads((world.laptop.ch_home / "tokens" / "srv.json").read_text())["tokens"]
    return {stored["access_token"], stored["refresh_token"]}


def files_holding(root: Path, secrets_: set[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(s.encode() in data for s in secrets_):
                found.append(str(path))
    return found


@asynccontextmanager
async def remote_session(remote: RemoteUser, name: str) -> AsyncIterator[ClientSession]:
    """An MCP client on the remote, running the bridge entry `chctl add` wrote there, as the remote user."""
    config: dict[str, Any] = parse_jsonc((remote.env.project / "opencode.json").read_text())
    command = [*remote.wrapper, *config["mcp"][name]["command"]]
    params = StdioServerParameters(
        command=command[0], args=command[1:], env={**remote.vars(), "CH_NO_AUTOSTART": "1"}, cwd=remote.env.project
    )
    with open_for_writing(Path(os.devnull)) as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


# --- the tests ------------------------------------------------------------------------------------------------


def test_add_and_login_on_the_remote_write_no_token_there(world: World) -> None:
    remote = world.remote
    entry = parse_jsonc((remote.env.project / "opencode.json").read_text())["mcp"]["srv"]
    assert entry["type"] == "local" and entry["command"][-2:] == ["bridge", "srv"]
    # Header mode would put the token in the remote's file: refused.
    done = remote.chctl("add", "srv", "--client", "opencode", "--mode", "header")
    assert done.returncode != 0 and "no header or key can be written here" in done.stderr
    assert "logged in to srv" in world.auth_output and "/auth?" in world.auth_output
    rows = {r["name"]: r for r in json.loads(remote.chctl("status", "--json").stdout)["servers"]}
    # Its state is the laptop's (logged in there), and the row says who carries it.
    assert rows["srv"]["via"] == str(remote.delegate) and rows["srv"]["state"] == "active" and rows["srv"]["usable"]
    assert f"ok via {remote.delegate}" in remote.chctl("status").stdout
    assert not (remote.env.ch_home / "tokens").exists() or not any((remote.env.ch_home / "tokens").iterdir())
    assert files_holding(remote.env.root, laptop_tokens(world)) == []


def test_a_bridged_session_on_the_remote_outlives_six_token_lifetimes(world: World) -> None:
    seen_secrets: set[str] = set()
    leaks: list[str] = []

    async def session() -> tuple[int, set[str]]:
        calls, seen = 0, set()
        async with remote_session(world.remote, "srv") as client:
            deadline = time.monotonic() + 6 * TOKEN_LIFETIME_S + 2
            while time.monotonic() < deadline or calls < 30:
                seen.add(await call(client, "token_id"))  # fails the test on any error
                calls += 1
                seen_secrets.update(laptop_tokens(world))
                if calls % 5 == 0:  # every token the laptop held so far: never in a file on the remote
                    leaks.extend(files_holding(world.remote.env.root, seen_secrets))
                await asyncio.sleep(0.25)  # the pace of the calls, not synchronisation
        return calls, seen

    calls, seen = asyncio.run(session())
    assert len(seen) >= 6, f"the server saw only {len(seen)} different tokens in {calls} calls"
    leaks.extend(files_holding(world.remote.env.root, seen_secrets))
    assert leaks == [], f"a token reached the remote machine: {sorted(set(leaks))}"
    assert "invalid_grant" not in world.provider.log_path.read_text()


def test_what_is_not_shared_or_not_remote_is_refused_through_the_forward(world: World) -> None:
    async def scenario() -> None:
        async with remote_session(world.remote, "other"):
            pass

    with pytest.raises(BaseException) as raised:
        asyncio.run(scenario())
    assert f"other is {NOT_REMOTE}: it is not shared" in messages_of(raised.value)
    # Straight to the forwarded socket: only the remote table answers.
    for method, params in [
        ("token.get", {"name": "srv"}),
        ("token.refresh", {"name": "srv"}),
        ("auth.logout", {"name": "srv"}),
        ("mcp.add", {"name": "x", "cwd": "/", "url": "https://example.test/mcp"}),
    ]:
        reply = rpc(world.remote.delegate, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert reply["error"]["message"] == f"{method} is {NOT_REMOTE}", reply
    status = rpc(world.remote.delegate, {"jsonrpc": "2.0", "id": 1, "method": "status"})["result"]
    assert [r["name"] for r in status["servers"]] == ["srv"] and set(status["servers"][0]) == {
        "name",
        "state",
        "expires_at",
    }
    assert (world.laptop.ch_home / "tokens" / "srv.json").exists()  # the logout did not happen


def test_ssh_killed_then_reconnected_the_next_call_succeeds(world: World) -> None:
    async def scenario() -> str:
        async with remote_session(world.remote, "srv") as client:
            await call(client, "token_id")
            stop_forward(world.forward)
            with pytest.raises(BaseException) as down:
                await call(client, "token_id")
            assert "reconnect" in messages_of(down.value), messages_of(down.value)
            world.forward = await asyncio.to_thread(start_forward, world.sshd, world.remote, world.laptop)
            return await call(client, "token_id")  # the same session, nothing restarted

    assert asyncio.run(scenario())


def test_opencode_on_the_remote_lists_the_delegated_server_as_connected(world: World) -> None:
    done = world.remote.run(str(OPENCODE_BIN), "mcp", "list", timeout=120)
    assert parse_mcp_list(done.stdout + done.stderr).get("srv") == "connected", done.stdout + done.stderr
