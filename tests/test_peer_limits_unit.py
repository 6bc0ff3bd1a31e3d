"""The peers' bounds in process. A remote bridge nobody uses is closed after its idle limit (15 minutes: here, a
fraction of a second); a local one is not (`chctl bridge` would open it again at once): the daemon's own services
and RPC servers, real Unix sockets, the idle limit shortened on the remote bridges' limits object. And the two
small parts they use: the shared byte budget, the log line that stands for a burst."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from structlog.testing import capture_logs

from context_harness.daemon.rpc_remote_methods import NOT_REMOTE
from context_harness.daemon.rpc_server import RpcServer, TakeoverCount
from context_harness.daemon.rpc_table import METHODS, REMOTE, REMOTE_STREAMS, STREAMS, bind
from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings
from context_harness.primitives.throttled_log import ThrottledLog
from context_harness.workers.peer_limits import REMOTE_SOCKET_LIMITS, BridgeLimits, ByteBudget

IDLE_S = 0.3
REGISTRY = {"servers": [{"name": "srv", "url": "http://127.0.0.1:9/mcp", "auth_type": "none"}]}
OPEN = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bridge.open", "params": {"name": "srv"}}).encode() + b"\n"


def listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def bridge_through(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(OPEN)
    reply = json.loads(await reader.readline())
    assert reply["result"]["server"] == "srv", reply
    return reader, writer


async def test_an_idle_remote_bridge_is_closed_and_an_idle_local_one_is_not(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ch")
    settings.home.mkdir(mode=0o700)
    settings.user_registry_file.write_text(json.dumps(REGISTRY))
    services = build_services(settings)
    services.shared.change(["srv"], shared=True)
    bridges = services.bridges
    bridges.remote_limits = BridgeLimits(bridges.remote_limits.budget, idle_s=IDLE_S)
    everyone = TakeoverCount(10)
    local = RpcServer(bind(METHODS, services), streams=bind(STREAMS, services), all_takeovers=everyone)
    remote = RpcServer(
        bind(REMOTE, services),
        streams=bind(REMOTE_STREAMS, services),
        refusal=NOT_REMOTE,
        limits=REMOTE_SOCKET_LIMITS,
        all_takeovers=everyone,
    )
    await local.start(listener(tmp_path / "l.sock"))
    await remote.start(listener(tmp_path / "r.sock"))
    try:
        local_reader, _local_writer = await bridge_through(tmp_path / "l.sock")
        remote_reader, remote_writer = await bridge_through(tmp_path / "r.sock")
        assert everyone.live == 2
        # Bytes from the client keep it open...
        for _ in range(3):
            await asyncio.sleep(IDLE_S / 2)
            remote_writer.write(b"\n")  # a blank line: a byte, no message
        # ...and then nothing: it is closed.
        async with asyncio.timeout(10):
            assert await remote_reader.read() == b""
        # The local one, idle as long and longer, is open.
        await asyncio.sleep(IDLE_S * 3)
        assert not local_reader.at_eof()
        for _ in range(1000):  # the remote bridge's slot is free again once its task has ended
            if everyone.live == 1:
                break
            await asyncio.sleep(0.01)
        assert everyone.live == 1
    finally:
        await remote.stop(grace_s=1)
        await local.stop(grace_s=1)
        await services.close()


def test_a_budget_with_a_parent_takes_from_both_and_refuses_without_taking() -> None:
    everyone = ByteBudget(100)
    remote = ByteBudget(60, parent=everyone)
    assert remote.take(50) and everyone.used == 50
    assert not remote.take(20) and (remote.used, everyone.used) == (50, 50)  # over its own share
    assert everyone.take(48) and not everyone.take(20)
    assert not remote.take(5) and remote.used == 50  # the parent is full
    remote.give(50)
    assert (remote.used, everyone.used) == (0, 48)


def test_a_burst_of_one_event_is_one_line_then_one_a_minute_with_how_many_were_left_out() -> None:
    now = [0.0]
    throttled = ThrottledLog("connection_refused", every_s=60, clock=lambda: now[0])
    with capture_logs() as logs:
        for second in range(120):  # ten a second for two minutes
            now[0] = float(second)
            for _ in range(10):
                throttled.note(reason="too many")
        now[0] = 130.0
        throttled.note(reason="too many")
    assert [(e["event"], e.get("suppressed")) for e in logs] == [
        ("connection_refused", None),
        ("connection_refused", 599),
        ("connection_refused", 599),
    ]
