"""`CH_CA_BUNDLE` is trusted only when it is the user's (issue 30 §4), tested as the attack: someone who can
write the bundle appends a CA of their own, and an impostor on the server's address shows a certificate from it.
The daemon must refuse such a bundle (naming the file and the fix) and send the impostor nothing; `chctl doctor`
calls it an error; and a reload reads the bundle's content again even though its path is the same.

The impostor is tests/peers/tls_front.py with the attacker's certificate in front of the recording proxy (which
writes down every request: the API key would be in its headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from context_harness.daemon.settings import Settings
from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.recording_proxy import RecordingProxy, start_recording_proxy
from tests.test_bridge import add_bridged, bridged_session, call, messages_of

TLS_FRONT = Path(__file__).resolve().parent / "peers" / "tls_front.py"
KEY = "k-the-users-api-key-an-impostor-wants-4e1b"
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
NOBODY = pwd.getpwnam("nobody")


@dataclass
class Impostor:
    url: str
    record: RecordingProxy
    front: PeerProcess

    def keys_seen(self) -> list[str]:
        return [r["headers"].get("X-API-Key", "") for r in self.record.requests()]


def issue(ca: trustme.CA, directory: Path, name: str) -> Path:
    leaf = directory / f"{name}.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(leaf))
    return leaf


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[Impostor, trustme.CA]]:
    """An https server on 127.0.0.1 with a certificate from the attacker's own CA, recording what it is sent."""
    attacker_ca = trustme.CA()
    record = start_recording_proxy(tmp_path / "impostor", answer=401)
    leaf = str(issue(attacker_ca, tmp_path, "impostor"))
    argv = [sys.executable, str(TLS_FRONT), "--cert", leaf, "--key", leaf, "--upstream", record.url]
    front = start_peer(argv, log_path=tmp_path / "impostor-front.log")
    yield Impostor(f"{front.ready['url']}/mcp", record, front), attacker_ca
    front.stop()
    record.stop()


def company_bundle(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "company-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    bundle.chmod(0o644)
    return bundle


def writable_by_all(bundle: Path) -> Path:
    bundle.chmod(0o666)
    return bundle


def owned_by_another_user(bundle: Path) -> Path:
    os.chown(bundle, NOBODY.pw_uid, NOBODY.pw_gid)
    return bundle


def in_a_directory_others_can_write(bundle: Path) -> Path:
    bundle.parent.chmod(0o777)
    return bundle.parent


@needs_root
@pytest.mark.parametrize("opened", [writable_by_all, owned_by_another_user, in_a_directory_others_can_write])
def test_an_appended_ca_gets_an_impostor_no_api_key(
    user_env: UserEnv, impostor: tuple[Impostor, trustme.CA], tmp_path: Path, opened: Callable[[Path], Path]
) -> None:
    server, attacker_ca = impostor
    setup = DaemonProcess(user_env).start()  # the user adds the server; nothing is sent yet
    try:
        add_bridged(user_env, "corp", "--url", server.url, "--key-header", "X-API-Key", "-k", KEY)
    finally:
        setup.stop()
    bundle = company_bundle(tmp_path / "shared")
    culprit = opened(bundle)
    with bundle.open("a") as appended:  # what anyone who can write it does
        appended.write(attacker_ca.cert_pem.bytes().decode())

    daemon = DaemonProcess(user_env, extra_env={"CH_CA_BUNDLE": str(bundle)})
    try:
        daemon.start()
        started = True
    except AssertionError:  # it refused to start
        started = False
    try:
        if started:  # the old code: the bridge sends the key to whoever shows a certificate the bundle vouches for

            async def scenario() -> None:
                async with bridged_session(user_env, "corp") as session:
                    await call(session, "echo", text="hello")

            with contextlib.suppress(BaseException):  # the impostor answers 401, after it has the key
                asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        daemon.stop()
    assert server.keys_seen() == []
    log = daemon.log()
    assert f"refusing CH_CA_BUNDLE {bundle}: {culprit} " in log, log
    assert "Traceback" not in log and ("chmod go-w" in log or "install -m 600" in log)


def test_a_bundle_that_opens_up_while_the_daemon_runs_is_an_error_in_doctor(user_env: UserEnv, tmp_path: Path) -> None:
    bundle = company_bundle(tmp_path / "ca")
    daemon = DaemonProcess(user_env, extra_env={"CH_CA_BUNDLE": str(bundle)}).start()
    try:
        ok = {c["name"]: c for c in json.loads(chctl(user_env, "doctor", "--json").stdout)}["network_ca"]
        assert ok["level"] == "ok"
        bundle.chmod(0o666)
        done = chctl(user_env, "doctor", "--json")
        assert done.returncode == 2
        check = {c["name"]: c for c in json.loads(done.stdout)}["network_ca"]
        assert check["level"] == "error"
        assert check["message"] == f"refusing CH_CA_BUNDLE {bundle}: {bundle} can be written by others (mode 666)"
        assert f"chmod go-w {bundle}" in check["hint"]
    finally:
        daemon.stop()


def test_a_reload_reads_the_bundle_again_under_the_same_path_and_refuses_one_opened_up(
    user_env: UserEnv, tmp_path: Path, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(key=KEY)
    new_ca = trustme.CA()
    leaf = str(issue(new_ca, tmp_path, "server"))
    upstream = server.url.rsplit("/", 1)[0]
    front = start_peer(
        [sys.executable, str(TLS_FRONT), "--cert", leaf, "--key", leaf, "--upstream", upstream],
        log_path=tmp_path / "front.log",
    )
    bundle = company_bundle(tmp_path / "ca")  # without the CA that signs the server's certificate, yet
    daemon = DaemonProcess(user_env, extra_env={"CH_CA_BUNDLE": str(bundle)}).start()
    assert daemon.proc is not None

    def reload() -> None:
        seen = sum(e.get("event") == "daemon_reloaded" for e in daemon.log_events())
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_for(
            lambda: sum(e.get("event") == "daemon_reloaded" for e in daemon.log_events()) > seen, 10, what="reload"
        )

    async def echo() -> str:
        async with bridged_session(user_env, "corp") as session:
            return await call(session, "echo", text="trusted")

    try:
        add_bridged(user_env, "corp", "--url", f"{front.ready['url']}/mcp", "--key-header", server.header, "-k", KEY)
        with pytest.raises(BaseException) as raised:
            asyncio.run(asyncio.wait_for(echo(), 60))
        assert "certificate not trusted" in messages_of(raised.value)

        with bundle.open("a") as appended:  # the user adds the CA: same file, same path
            appended.write(new_ca.cert_pem.bytes().decode())
        reload()
        assert asyncio.run(asyncio.wait_for(echo(), 60)) == "trusted"

        bundle.write_text(trustme.CA().cert_pem.bytes().decode())  # replaced by someone who can write it
        bundle.chmod(0o666)
        reload()
        refused = [e for e in daemon.log_events() if e.get("event") == "reload_settings_invalid"]
        assert refused and f"refusing CH_CA_BUNDLE {bundle}" in refused[-1]["problems"]
        assert asyncio.run(asyncio.wait_for(echo(), 60)) == "trusted"  # the trust store it had, kept
    finally:
        daemon.stop()
        front.stop()


# --- what counts as the user's -----------------------------------------------------------------------------


def test_a_sticky_directory_like_tmp_is_accepted_for_a_file_of_the_user_s(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    bundle = company_bundle(sticky)
    assert Settings(ca_bundle=bundle).network().ca_bundle is not None


@needs_root
def test_a_file_or_a_link_of_another_user_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    own = company_bundle(tmp_path / "mine")
    link = sticky / "link.pem"
    link.symlink_to(own)
    os.chown(link, NOBODY.pw_uid, NOBODY.pw_gid, follow_symlinks=False)  # they could point it anywhere
    with pytest.raises(ValidationError, match=f"{link} is owned by uid {NOBODY.pw_uid}"):
        Settings(ca_bundle=link)
    theirs = company_bundle(sticky)
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(ValidationError, match=f"{theirs} is owned by uid {NOBODY.pw_uid}"):
        Settings(ca_bundle=theirs)


def test_doctor_with_no_daemon_says_why_one_would_not_start(user_env: UserEnv, tmp_path: Path) -> None:
    bundle = company_bundle(tmp_path / "ca")
    bundle.chmod(0o666)
    done = chctl(user_env, "doctor", autostart=True, extra_env={"CH_CA_BUNDLE": str(bundle)})
    assert done.returncode == 2
    assert "✗ daemon reachable: started context-harnessd but it did not answer" in done.stdout
    assert f"(it exited with code 1: invalid settings: refusing CH_CA_BUNDLE {bundle}: {bundle} can be" in done.stdout
    assert f"chmod go-w {bundle}" in done.stdout


def test_a_fifo_in_place_of_the_bundle_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ValidationError, match=f"CH_CA_BUNDLE {fifo}: not a regular file"):
        Settings(ca_bundle=fifo)
