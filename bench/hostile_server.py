"""What a hostile bridged server costs the daemon: its peak memory over idle and the slowest `daemon.status`.

For each attack a fresh daemon bridges one server (an aiohttp server in a process of its own, on 127.0.0.1).
Past the limit, it answers `tools/call` with:
- huge-body:     a JSON reply with no length that goes on for --size-mib;
- endless-event: an SSE event whose `data:` lines never end (no blank line), for --seconds;
- endless-line:  an SSE `data:` line that never ends (no line ending), for --seconds.
Just under the limit (a real answer of --under-mib, a tools/list page of small tools with its id last, as the
TypeScript SDK writes it; every figure is relayed whole):
- json-body:     as a JSON reply;
- sse-event:     as one SSE event, a `data:` line per tool;
- sse-line:      as one SSE event of a single `data:` line;
- client-line:   the client's own line to the bridge (a `tools/call` with arguments of --under-mib);
- check:         `chctl check` against a server whose `tools/list` pages are that size (two pages).
While it runs, `daemon.status` is asked every 50 ms on a connection of its own. Reported per attack: the
daemon's resident memory at idle, its peak during the attack (VmHWM, reset at idle through
/proc/PID/clear_refs), the difference, the slowest `daemon.status`, how the call ended. Goal: at most 64 MiB
over idle, no `daemon.status` over 100 ms.

    .venv/bin/python bench/hostile_server.py [--attacks json-body check ...] [--size-mib 1024] [--under-mib 60]
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
from tests.support.memory import MIB, reset_peak, resident
from tests.support.pages import tools_page

CHCTL = Path(sys.executable).parent / "chctl"
PAST = ("huge-body", "endless-event", "endless-line")
UNDER = ("json-body", "sse-event", "sse-line", "client-line", "check")
ATTACKS = PAST + UNDER
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


# --- the hostile server (run as `hostile_server.py --serve ATTACK`, in a process of its own) -----------------


def serve(attack: str, size: int, under: int, seconds: float) -> None:
    async def post(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if message.get("method") == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "h"}}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return web.json_response(reply, headers={"Mcp-Session-Id": "s-1"})
        if "id" not in message:
            return web.Response(status=202)
        if attack in UNDER:
            return await just_under(request, message)
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

    async def just_under(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        if attack == "client-line":
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}})
        first_page = message.get("method") == "tools/list" and not (message.get("params") or {}).get("cursor")
        pieces = tools_page(under, message["id"], "page-2" if attack == "check" and first_page else None)
        if attack in ("json-body", "check"):
            body = b"".join(pieces)
            return web.Response(body=body, content_type="application/json")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        if attack == "sse-line":
            await stream.write(b"data: " + b"".join(pieces) + b"\n\n")
        else:
            await stream.write(b"".join(b"data: " + piece + b"\n" for piece in pieces) + b"\n")
        return stream

    async def get(request: web.Request) -> web.Response:
        return web.Response(status=405)

    app = web.Application(client_max_size=2 * under + 1024 * 1024)
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", get)

    bench_env.serve_on_loopback(app)


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


async def attack_once(
    env: bench_env.UserEnv, daemon: bench_env.DaemonProcess, attack: str, under: int, deadline_s: float
) -> dict[str, Any]:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    client_env = {**env.vars(), **bench_env.QUIET_DAEMON, "CH_NO_AUTOSTART": "1"}
    check = [str(CHCTL), "check", "hostile", "--json", "--timeout", str(deadline_s)]
    argv = check if attack == "check" else [str(CHCTL), "bridge", "hostile"]
    if attack != "check":
        client = await asyncio.create_subprocess_exec(
            *argv,
            env=client_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 28,
        )
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        await client.stdin.drain()
        await client.stdout.readline()
    await asyncio.sleep(1)  # the session's own traffic settles
    idle = reset_peak(pid)
    stop = asyncio.Event()
    probe = asyncio.create_task(status_probe(env.socket, stop))
    began = time.perf_counter()
    if attack == "check":
        client = await asyncio.create_subprocess_exec(
            *argv, env=client_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    else:
        assert client.stdin is not None
        client.stdin.write(client_line(under) if attack == "client-line" else json.dumps(CALL).encode() + b"\n")
        await client.stdin.drain()
    assert client.stdout is not None
    answer = client.stdout.read() if attack == "check" else client.stdout.readline()  # check prints a document
    try:
        line: bytes | None = await asyncio.wait_for(answer, deadline_s)
    except TimeoutError:
        line = None
    took = time.perf_counter() - began
    stop.set()
    latencies = await probe
    # Read only now: decoding a 60 MiB answer holds this process's loop for seconds, and a probe in flight
    # meanwhile would count that against the daemon.
    outcome = describe(line) if line is not None else f"no answer within {deadline_s:g} s"
    peak = resident(pid)[1]
    if client.stdin is not None:
        client.stdin.close()
    try:
        await asyncio.wait_for(client.wait(), 10)
    except TimeoutError:
        client.kill()
        await client.wait()
    return {
        "idle_mib": round(idle / MIB, 1),
        "peak_mib": round(peak / MIB, 1),
        "extra_mib": round((peak - idle) / MIB, 1),
        "slowest_status_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "status_calls": len(latencies),
        "call_s": round(took, 1),
        "outcome": outcome[:80],
    }


def client_line(under: int) -> bytes:
    """A `tools/call` whose arguments are a tools/list page of `under` bytes."""
    head = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{"page":'
    return head + b"".join(tools_page(under, "inner")) + b"}}}\n"


def describe(line: bytes) -> str:
    if not line:
        return "no answer (closed)"
    try:
        reply = json.loads(line)
    except ValueError:
        return "an unreadable answer"
    if isinstance(reply, list):  # chctl check --json
        server = reply[0] if reply else {}
        return f"{server.get('outcome')}: {server.get('tools')} tools, {server.get('message')}"
    if "error" in reply:
        return str(reply["error"].get("message"))
    return f"answered ({len(line) / MIB:.1f} MiB)"


def run_attack(attack: str, args: argparse.Namespace, daemon_env: dict[str, str]) -> dict[str, Any]:
    sizes = ["--size-mib", str(args.size_mib), "--under-mib", str(args.under_mib), "--seconds", str(args.seconds)]
    server = subprocess.Popen([sys.executable, __file__, "--serve", attack, *sizes], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with bench_env.user_env() as env, bench_env.running_daemon(env, daemon_env) as daemon:
            assert chctl(env, "init").returncode == 0
            url = f"http://127.0.0.1:{port}/mcp"
            added = chctl(env, "add", "hostile", "--bridge", "--url", url, "--key-header", "X-Key", "-k", "k-1")
            assert added.returncode == 0, added.stderr
            under = int(args.under_mib * MIB)
            result = asyncio.run(attack_once(env, daemon, attack, under, args.seconds + 120))
            for slow in (line for line in daemon.log().splitlines() if "seconds" in line and "took" in line):
                print(f"{attack}: {slow}", file=sys.stderr)  # asyncio's debug mode names what held the loop
            return result
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--size-mib", type=int, default=1024, help="huge-body: how much the server sends")
    parser.add_argument("--under-mib", type=float, default=60, help="the attacks just under the limit: their size")
    parser.add_argument("--seconds", type=float, default=20.0, help="endless-*: how long the server sends")
    parser.add_argument("--asyncio-debug", action="store_true", help="the daemon logs callbacks over 100 ms")
    parser.add_argument("--serve", choices=ATTACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.size_mib * MIB, int(args.under_mib * MIB), args.seconds)
        return
    daemon_env = {"PYTHONASYNCIODEBUG": "1"} if args.asyncio_debug else {}
    results = {attack: run_attack(attack, args, daemon_env) for attack in args.attacks}
    rows = []
    for attack, r in results.items():
        rows.append(
            (
                attack,
                f"idle {r['idle_mib']} MiB, peak {r['peak_mib']} MiB (+{r['extra_mib']}), slowest daemon.status "
                f"{r['slowest_status_ms']} ms of {r['status_calls']}, took {r['call_s']} s: {r['outcome']}",
            )
        )
    figures = {f"{attack}_{key}": value for attack, r in results.items() for key, value in r.items()}
    bench_env.report("a hostile bridged server: daemon peak memory over idle and slowest daemon.status", rows, figures)


if __name__ == "__main__":
    main()
