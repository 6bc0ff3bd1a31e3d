"""`daemon.status` requests per second over the Unix socket, with 1 and with 32 concurrent connections.

Each connection sends one request line, reads the reply line, and sends the next, for --seconds. The
client is plain asyncio in this process; the daemon is the real one, in its own process. Target:
>= 5,000 requests/s.

    .venv/bin/python bench/rpc_throughput.py [--seconds 3] [--connections 1 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import bench_env

TARGET_RPS = 5000
REQUEST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).encode() + b"\n"


async def one_connection(socket_path: Path, deadline: float) -> int:
    """Back-to-back requests on one connection until the deadline; returns how many were answered."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    answered = 0
    try:
        while time.monotonic() < deadline:
            writer.write(REQUEST)
            reply = await reader.readline()
            if b'"result"' not in reply:
                raise RuntimeError(f"unexpected reply: {reply[:200]!r}")
            answered += 1
    finally:
        writer.close()
        await writer.wait_closed()
    return answered


async def measure(socket_path: Path, connections: int, seconds: float) -> tuple[float, int]:
    """(requests per second, requests answered) with `connections` clients at once."""
    started = time.monotonic()
    counts = await asyncio.gather(*(one_connection(socket_path, started + seconds) for _ in range(connections)))
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each measurement runs")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32], help="concurrent connections")
    args = parser.parse_args()

    results: dict[int, dict[str, float]] = {}
    with bench_env.user_env() as env, bench_env.running_daemon(env) as daemon:
        assert daemon.proc is not None
        asyncio.run(measure(env.socket, 1, 0.3))  # warm-up: first-use imports and caches in the daemon
        for connections in args.connections:
            cpu_before = bench_env.cpu_seconds(daemon.proc.pid)
            rps, answered = asyncio.run(measure(env.socket, connections, args.seconds))
            cpu = bench_env.cpu_seconds(daemon.proc.pid) - cpu_before
            results[connections] = {"rps": round(rps), "requests": answered, "daemon_cpu_s": round(cpu, 2)}

    bench_env.report(
        f"daemon.status over the Unix socket, {args.seconds:g} s per row (target >= {TARGET_RPS:,} req/s)",
        [
            (
                f"{n} connection{'s' if n > 1 else ''}",
                f"{r['rps']:>7,.0f} req/s  ({r['requests']:,} requests, daemon CPU {r['daemon_cpu_s']} s)",
            )
            for n, r in results.items()
        ],
        {"seconds": args.seconds, "target_rps": TARGET_RPS, "results": {str(n): r for n, r in results.items()}},
    )


if __name__ == "__main__":
    main()
