"""What a hostile bridged server costs the daemon: its peak memory and the slowest `daemon.status` meanwhile.

For each attack a fresh daemon bridges one server (an aiohttp server in a process of its own, on 127.0.0.1)
that answers `tools/call` with:
- huge-body:    a JSON reply with no length that goes on for --size-mib;
- endless-event: an SSE event whose `data:` lines never end (no blank line), for --seconds;
- endless-line:  an SSE `data:` line that never ends (no line ending), for --seconds.
While the call runs, `daemon.status` is asked every 50 ms on a connection of its own. Reported per attack:
the daemon's peak RSS (VmHWM) before and after, the difference, the slowest `daemon.status`, how the call
ended. Goal: at most 64 MiB more than idle, no `daemon.status` over 100 ms.

    .venv/bin/python bench/hostile_server.py [--attacks huge-body endless-event endless-line] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_env
from aiohttp import web

from tests.support.daemon import chctl

CHCTL = Path(sys.executable).parent / "chctl"
ATTACKS = ("huge-body", "endless-event", "endless-line")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


# --- the hostile server (run as `hostile_server.py --serve ATTACK`, in a process of its own) -----------------


def serve(attack: str, size: int, seconds: float) -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if message.get("method") == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "h"}}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return web.json_response(reply, headers={"Mcp-Session-Id": "s-1"})
        if "id" not in message:
            return web.Response(status=202)
        kind = "application/json" if attack == "huge-body" else "text/event-stream"
        response = web.StreamResponse(headers={"Content-Type": kind})
        await response.prepare(request)
        chunk = {
            "huge-body": b"[" + b"0," * (512 * 1024),
            "endless-event": (b"data: " + b"x" * 1000 + b"\n") * 1024,
            "endless-line": b"x" * (1024 * 1024),
        }[attack]
        if attack == "endless-line":
            await response.write(b"data: ")
        sent, deadline = 0, time.monotonic() + seconds
        try:
            while (sent < size) if attack == "huge-body" else (time.monotonic() < deadline):
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def get(request: web.Request) -> web.Response:
        return web.Response(status=405)

    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", get)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


# --- the measurement ------------------------------------------------------------------------------------------


async def status_probe(socket_path: Path, stop: asyncio.Event) -> list[float]:
    latencies = []
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).encode() + b"\n"
    while not stop.is_set():
        began = time.perf_counter()
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(request)
        await writer.drain()
        await reader.readline()
        latencies.append(time.perf_counter() - began)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    return latencies


async def attack_once(env: bench_env.UserEnv, daemon: bench_env.DaemonProcess, deadline_s: float) -> dict[str, Any]:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    client_env = {**env.vars(), **bench_env.QUIET_DAEMON, "CH_NO_AUTOSTART": "1"}
    bridge = await asyncio.create_subprocess_exec(
        str(CHCTL),
        "bridge",
        "hostile",
        env=client_env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=1 << 28,
    )
    assert bridge.stdin is not None and bridge.stdout is not None
    bridge.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    await bridge.stdin.drain()
    await bridge.stdout.readline()
    idle = bench_env.proc_status(pid)
    stop = asyncio.Event()
    probe = asyncio.create_task(status_probe(env.socket, stop))
    bridge.stdin.write(json.dumps(CALL).encode() + b"\n")
    await bridge.stdin.drain()
    began = time.perf_counter()
    try:
        line = await asyncio.wait_for(bridge.stdout.readline(), deadline_s)
        reply = json.loads(line) if line else {}
        outcome = reply.get("error", {}).get("message") or "answered"
    except TimeoutError:
        outcome = f"no answer within {deadline_s:g} s"
    except ValueError:
        outcome = "an unreadable answer"
    took = time.perf_counter() - began
    stop.set()
    latencies = await probe
    peak = bench_env.proc_status(pid)
    bridge.stdin.close()
    try:
        await asyncio.wait_for(bridge.wait(), 10)
    except TimeoutError:
        bridge.kill()
        await bridge.wait()
    return {
        "idle_peak_mib": round(idle["VmHWM"] / bench_env.MIB, 1),
        "peak_mib": round(peak["VmHWM"] / bench_env.MIB, 1),
        "extra_mib": round((peak["VmHWM"] - idle["VmHWM"]) / bench_env.MIB, 1),
        "slowest_status_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "status_calls": len(latencies),
        "call_s": round(took, 1),
        "outcome": str(outcome)[:80],
    }


def run_attack(attack: str, args: argparse.Namespace) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", attack, "--size-mib", str(args.size_mib), "--seconds", str(args.seconds)],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with bench_env.user_env() as env, bench_env.running_daemon(env) as daemon:
            assert chctl(env, "init").returncode == 0
            url = f"http://127.0.0.1:{port}/mcp"
            added = chctl(env, "add", "hostile", "--bridge", "--url", url, "--key-header", "X-Key", "-k", "k-1")
            assert added.returncode == 0, added.stderr
            return asyncio.run(attack_once(env, daemon, args.seconds + 60))
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--size-mib", type=int, default=1024, help="huge-body: how much the server sends")
    parser.add_argument("--seconds", type=float, default=20.0, help="endless-*: how long the server sends")
    parser.add_argument("--serve", choices=ATTACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.size_mib * bench_env.MIB, args.seconds)
        return
    results = {attack: run_attack(attack, args) for attack in args.attacks}
    rows = []
    for attack, r in results.items():
        rows.append(
            (
                attack,
                f"peak {r['idle_peak_mib']} -> {r['peak_mib']} MiB (+{r['extra_mib']}), slowest daemon.status "
                f"{r['slowest_status_ms']} ms of {r['status_calls']}, call {r['call_s']} s: {r['outcome']}",
            )
        )
    figures = {f"{attack}_{key}": value for attack, r in results.items() for key, value in r.items()}
    bench_env.report("a hostile bridged server: daemon peak memory and slowest daemon.status", rows, figures)


if __name__ == "__main__":
    main()
