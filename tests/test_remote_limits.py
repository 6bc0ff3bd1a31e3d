"""The far end of `remote.sock` (a compromised dev box) is outside input, and each test here is its attack:
a flood of connections and bridges, unfinished lines, stalled and idle bridges, logins with a client of its
own or by the dozen. The laptop's own `chctl` keeps answering, the daemon's memory and log stay small, the
stored client stays the laptop's. The bounds are in `workers/peer_limits.py` (README, docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.peers.mcp_servers import McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl, rpc, wait_for
from tests.support.env import UserEnv, make_user_env
from tests.support.flood import flooding, request_line

KEY = "k-laptop-0123456789abcdef"
DEAD_URL = "http://127.0.0.1:9/mcp"  # nothing is sent upstream in these tests
MIB = 1024 * 1024
# The documented bounds (README, docs/security.md; `workers/peer_limits.py`), written out: a test of them must
# not read them from the code it tests.
REMOTE_MAX_CONNECTIONS = 48
REMOTE_MAX_BRIDGES = 32
REGISTRATION_BURST = 10
REGISTRATION_REFILL_S = 6.0


def remote_socket(user_env: UserEnv) -> Path:
    return user_env.socket.parent / "remote.sock"


def remote_call(user_env: UserEnv, method: str, params: dict[str, Any] | None = None) -> Any:
    return rpc(remote_socket(user_env), None, raw=request_line(method, params))


def share_a_bridge(user_env: UserEnv, name: str = "srv") -> None:
    assert chctl(user_env, "init").returncode == 0 or (user_env.project / "opencode.json").exists()
    assert chctl(user_env, "add", name, "--bridge", "--url", DEAD_URL).returncode == 0
    assert chctl(user_env, "share", name).returncode == 0


def events(daemon: DaemonProcess, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events()[since:]]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def laptop_at_1024(user_env: UserEnv) -> Iterator[DaemonProcess]:
    """The daemon as a desktop session starts it: a soft RLIMIT_NOFILE of 1024 (the hard one left as it is)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    daemon = DaemonProcess(user_env, wrapper=["prlimit", f"--nofile=1024:{hard}", "--"]).start()
    yield daemon
    daemon.stop()


# --- §6: connections, bridges, descriptors, the log --------------------------------------------------------


def test_1100_remote_connections_leave_the_laptops_chctl_answering_and_the_log_small(
    laptop_at_1024: DaemonProcess, user_env: UserEnv
) -> None:
    daemon = laptop_at_1024
    assert daemon.proc is not None
    share_a_bridge(user_env)
    added = chctl(user_env, "add", "keyed", "--url", DEAD_URL, "--key-header", "X-Key", "-k", KEY)
    assert added.returncode == 0, added.stderr
    log_before = len(daemon.log_events())

    with flooding(remote_socket(user_env), 1100, request_line("bridge.open", {"name": "srv"})) as flood:
        assert flood.first_round.wait(120), "the flood never got going"
        token = chctl(user_env, "token", "keyed", timeout=120)
        status = chctl(user_env, "status", timeout=120)

    assert token.returncode == 0 and token.stdout.strip() == KEY, token.stderr
    assert status.returncode == 0 and "srv (shared)" in status.stdout, status.stderr
    assert flood.held <= REMOTE_MAX_BRIDGES, flood
    assert flood.replies and flood.replies[0]["error"]["data"]["code"] == "LIMIT_REACHED", flood.replies
    assert "too many" in flood.replies[0]["error"]["message"]
    during = events(daemon, log_before)
    raw = daemon.log()
    assert "Too many open files" not in raw and "out of system resource" not in raw
    refusals = [e for e in during if e.get("event") == "connection_refused"]
    assert 1 <= len(refusals) <= 3, len(refusals)  # one line a minute, whatever the number of attempts
    assert len(during) < 200, f"{len(during)} log lines during the flood"
    assert rpc(user_env.socket, json.loads(request_line("daemon.status")))["result"]["pid"] == daemon.proc.pid
    limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
    assert soft == hard, "the soft RLIMIT_NOFILE was not raised to the hard one at start"


def test_the_remote_connection_past_the_cap_is_told_why_and_the_local_socket_still_answers(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    held = []
    try:
        for _ in range(REMOTE_MAX_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(remote_socket(user_env)))
            held.append(sock)
        for sock in held:  # each is being served: it answers
            sock.sendall(request_line("daemon.status"))
            assert b'"result"' in sock.recv(65536)
        reply = rpc(remote_socket(user_env), None, raw=request_line("daemon.status").replace(b'"id": 1', b'"id": 7'))
        assert "error" in reply, f"connection {REMOTE_MAX_CONNECTIONS + 1} was served: {reply}"
        assert reply["id"] == 7 and reply["error"]["data"]["code"] == "LIMIT_REACHED", reply
        assert (
            reply["error"]["message"] == f"too many connections from other machines: {REMOTE_MAX_CONNECTIONS} are open"
        )
        assert rpc(user_env.socket, json.loads(request_line("daemon.status")))["result"]["pid"] > 0
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the remote socket serves again.
    wait_for(lambda: "result" in remote_call(user_env, "daemon.status"), 10, 0.1, what="a free slot")


def test_an_emfile_flood_on_the_local_socket_is_one_log_line_not_thousands(user_env: UserEnv) -> None:
    """A hard limit of 64 descriptors (the daemon cannot raise it): 100 connections use them up. asyncio retries
    the accept every second and logged each failure with its traceback: 17,512 such lines in one flood."""
    daemon = DaemonProcess(user_env, wrapper=["prlimit", "--nofile=64:64", "--"]).start()
    try:
        wait_for(lambda: "refresher_started" in daemon.log(), 30, 0.05, what="the daemon's start-up to end")
        assert rpc(user_env.socket, json.loads(request_line("status")))["result"]  # what serving imports, imported
        held = []
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(str(user_env.socket))
            held.append(sock)
        ran_out = ("descriptors_exhausted", "Too many open files")
        wait_for(lambda: any(m in daemon.log() for m in ran_out), 30, 0.1, what="the daemon to run out")
        time.sleep(3)  # asyncio's accept retries (one a second) go on meanwhile: none of them may log a line
        for sock in held:
            sock.close()
        wait_for(lambda: rpc(user_env.socket, json.loads(request_line("daemon.status"))), 30, 0.2, what="answers")
        raw = daemon.log()
        assert "Traceback" not in raw
        told = [line for line in raw.splitlines() if "out of system resource" in line or "Too many open" in line]
        assert 1 <= len(told) <= 2, told[:5]
        exhausted = [e for e in daemon.log_events() if e.get("event") == "descriptors_exhausted"]
        assert 1 <= len(exhausted) <= 2, exhausted
    finally:
        daemon.stop()


# --- §6: memory and time held by bridges --------------------------------------------------------------------


def open_bridge(path: Path, name: str = "srv") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sock.sendall(request_line("bridge.open", {"name": name}))
    reply = b""
    while not reply.endswith(b"\n"):
        reply += sock.recv(65536)
    assert b'"result"' in reply, reply
    return sock


def test_16_remote_bridges_sending_60_mib_unfinished_lines_cost_one_shared_budget(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    """Before: +980 MiB (each bridge kept up to 64 MiB of its line). The remote bridges share 64 MiB."""
    assert daemon.proc is not None
    share_a_bridge(user_env)
    bridges = [open_bridge(remote_socket(user_env)) for _ in range(16)]
    before = peak_rss(daemon.proc.pid)
    chunk = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "' + b"x" * (MIB - 64)

    def send_60_mib(sock: socket.socket) -> None:
        try:
            for _ in range(60):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed this bridge: its line did not fit the budget

    senders = [threading.Thread(target=send_60_mib, args=(sock,)) for sock in bridges]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    grown = peak_rss(daemon.proc.pid) - before
    for sock in bridges:
        sock.close()
    assert grown < 256 * MIB, f"the daemon grew by {grown // MIB} MiB"
    assert "bridge_buffer_budget_exhausted" in daemon.log()
    assert rpc(user_env.socket, json.loads(request_line("daemon.status")))["result"]["pid"] == daemon.proc.pid


@pytest.mark.parametrize("through", ["remote.sock", "chd.sock"])
def test_half_a_message_that_stalls_closes_the_bridge(user_env: UserEnv, through: str) -> None:
    daemon = DaemonProcess(user_env, extra_env={"CH_RPC_IDLE_TIMEOUT_S": "1"}).start()
    try:
        share_a_bridge(user_env)
        with open_bridge(user_env.socket.parent / through) as sock:
            sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/li')  # and then nothing
            assert closed_within(sock, 30), "the bridge stayed open with half a message"
        assert any(e.get("event") == "bridge_idle_closed" and e.get("mid_message") for e in daemon.log_events())
    finally:
        daemon.stop()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False


# --- §8: a remote login takes only a name --------------------------------------------------------------------


@pytest.fixture
def shared_oauth(daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer) -> McpOAuthServer:
    assert chctl(user_env, "init").returncode == 0
    for name in ("srv", "other"):
        assert chctl(user_env, "add", name, "--url", mcp_oauth_server.url).returncode == 0
    assert chctl(user_env, "share", "srv", "other").returncode == 0
    return mcp_oauth_server


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_remote_login_with_a_client_of_its_own_is_refused_and_the_laptops_client_stays(
    daemon: DaemonProcess, user_env: UserEnv, shared_oauth: McpOAuthServer
) -> None:
    local = rpc(user_env.socket, json.loads(request_line("auth.start", {"name": "srv"})))["result"]
    stored_file = user_env.ch_home / "clients" / "srv.json"
    stored = stored_file.read_bytes()
    laptop_client = json.loads(stored)["client_id"]
    assert rpc(user_env.socket, json.loads(request_line("auth.cancel", {"flow_id": local["flow_id"]})))["result"]

    hostile = {"name": "srv", "client_id": "dev-box-client", "client_secret": "s3cret-of-the-box", "scopes": ["all"]}
    for params in (hostile, {"name": "srv", "port": 8765}, {"name": "srv", "timeout_s": 3600}):
        error = remote_call(user_env, "auth.start", params)["error"]
        assert error["data"]["code"] == "INVALID_PARAMS", error
        assert error["message"] == "from another machine, auth.start takes only the server's name"
    assert stored_file.read_bytes() == stored
    assert "s3cret-of-the-box" not in daemon.log()

    # By its name alone: the laptop's client, the laptop's scopes, a port the laptop chose.
    started = remote_call(user_env, "auth.start", {"name": "srv"})["result"]
    url = query(started["authorization_url"])
    assert url["client_id"] == laptop_client and url["scope"] == query(local["authorization_url"])["scope"]
    assert rpc(user_env.socket, json.loads(request_line("auth.cancel", {"flow_id": started["flow_id"]})))["result"]
    assert stored_file.read_bytes() == stored


def test_on_the_remote_machine_chctl_auth_with_a_client_of_its_own_is_refused_before_the_laptop_hears_of_it(
    daemon: DaemonProcess,
    user_env: UserEnv,
    shared_oauth: McpOAuthServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    remote = make_user_env(Path(tmp_path_factory.mktemp("remote")))
    delegate = {"CH_DELEGATE_SOCKET": str(remote_socket(user_env))}
    remote_daemon = DaemonProcess(remote, extra_env=delegate).start()
    try:
        assert chctl(remote, "init", extra_env=delegate).returncode == 0
        assert chctl(remote, "add", "srv", extra_env=delegate).returncode == 0
        for flags in (["--client-id", "dev-box-client"], ["--scope", "all"], ["--port", "8765"]):
            done = chctl(remote, "auth", "srv", "--no-browser", *flags, extra_env=delegate)
            assert done.returncode == 1 and "error[INVALID_PARAMS]: srv logs in on the laptop" in done.stderr, (
                flags,
                done.stderr,
            )
    finally:
        remote_daemon.stop()
    assert not any(e.get("event") == "authorization_started" for e in daemon.log_events())
    assert not (user_env.ch_home / "clients" / "srv.json").exists()


def test_a_burst_of_remote_logins_makes_one_registration_and_one_listener(
    daemon: DaemonProcess, user_env: UserEnv, shared_oauth: McpOAuthServer
) -> None:
    """Before: 40 remote `auth.start` calls in 0.2 s made 40 client registrations and 40 callback listeners."""

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(asyncio.to_thread(remote_call, user_env, "auth.start", {"name": "other"}) for _ in range(40))
        )

    replies = asyncio.run(burst())
    assert all("result" in r for r in replies), [r for r in replies if "result" not in r][:1]
    flows = {(r["result"]["flow_id"], r["result"]["authorization_url"]) for r in replies}
    assert len(flows) == 1, f"{len(flows)} logins"
    ((flow_id, url),) = flows
    registered = [e for e in daemon.log_events() if e.get("event") == "client_registered"]
    assert len(registered) == 1, registered
    started = [e for e in daemon.log_events() if e.get("event") == "authorization_started"]
    assert len(started) == 1, started  # one callback listener
    assert socket_accepts(urlsplit(query(url)["redirect_uri"]).port)
    # Its waiter gets the login's outcome; the remote may wait on the id it was given.
    assert rpc(user_env.socket, json.loads(request_line("auth.cancel", {"flow_id": flow_id})))["result"]


def socket_accepts(port: int | None) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port or 0)) == 0


def test_new_client_registrations_are_rate_limited_per_issuer_whichever_socket_asks(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    """20 servers of one authorization server, a login started for each at once: ten registrations, then one
    every six seconds; the others are refused, saying when to try again."""
    assert chctl(user_env, "init").returncode == 0
    names = [f"s{i}" for i in range(20)]
    for name in names:
        assert chctl(user_env, "add", name, "--url", mcp_oauth_server.url).returncode == 0

    async def starts() -> list[Any]:
        return await asyncio.gather(
            *(
                asyncio.to_thread(rpc, user_env.socket, json.loads(request_line("auth.start", {"name": n})))
                for n in names
            )
        )

    began = time.monotonic()
    replies = asyncio.run(starts())
    took = time.monotonic() - began
    refused = [r["error"] for r in replies if "error" in r]
    registered = [e for e in daemon.log_events() if e.get("event") == "client_registered"]
    assert len(registered) <= REGISTRATION_BURST + 1 + int(took / REGISTRATION_REFILL_S), (len(registered), took)
    assert len(refused) + len(registered) == len(names)
    assert refused and all(e["data"]["code"] == "LIMIT_REACHED" for e in refused), refused
    assert "too many new client registrations at " in refused[0]["message"]  # after the server's name
    assert refused[0]["data"]["hint"].startswith("try again in ")
    for reply in replies:
        if "result" in reply:
            rpc(user_env.socket, json.loads(request_line("auth.cancel", {"flow_id": reply["result"]["flow_id"]})))
