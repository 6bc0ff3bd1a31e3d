"""The daemon's resident memory: idle and empty, then with 100 API-key servers in one opencode.json (and so
100 token files), idle and after a `status` call, and again after a restart that loads them all.

Figures are VmRSS (now) and VmHWM (the peak so far) from /proc/<pid>/status. Target: <= 60 MiB.

    .venv/bin/python bench/daemon_memory.py [--servers 100]
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path
from typing import Any

import bench_env

from tests.support.daemon import rpc

TARGET_MIB = 60
SETTLE_S = 1.0  # let start-up work (refresher planning, first log lines) finish before reading "idle"


def call(socket_path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    reply = rpc(socket_path, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    if "error" in reply:
        raise SystemExit(f"{method} failed: {reply['error']}")
    return reply["result"]


def mib(pid: int) -> dict[str, float]:
    status = bench_env.proc_status(pid)
    return {"rss_mib": round(status["VmRSS"] / bench_env.MIB, 1), "hwm_mib": round(status["VmHWM"] / bench_env.MIB, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100)
    args = parser.parse_args()

    figures: dict[str, dict[str, float]] = {}
    with bench_env.user_env() as env:
        with bench_env.running_daemon(env) as daemon:
            assert daemon.proc is not None
            time.sleep(SETTLE_S)
            figures["idle, empty"] = mib(daemon.proc.pid)
            cwd = str(env.project)
            call(env.socket, "config.init", {"cwd": cwd})
            for i in range(args.servers):
                call(
                    env.socket,
                    "mcp.add",
                    {
                        "cwd": cwd,
                        "name": f"srv{i:03d}",
                        "url": f"http://127.0.0.1:9/mcp/{i}",
                        "api_key": secrets.token_urlsafe(24),
                    },
                )
            time.sleep(SETTLE_S)
            figures[f"idle, {args.servers} servers added"] = mib(daemon.proc.pid)
            listed = call(env.socket, "status")["servers"]
            figures[f"after status ({len(listed)} rows)"] = mib(daemon.proc.pid)
        token_files = len(list((env.ch_home / "tokens").glob("*.json")))
        with bench_env.running_daemon(env) as daemon:
            assert daemon.proc is not None
            time.sleep(SETTLE_S)
            figures[f"restarted with {args.servers} servers, idle"] = mib(daemon.proc.pid)
            call(env.socket, "status")
            figures["restarted, after status"] = mib(daemon.proc.pid)

    peak = max(f["hwm_mib"] for f in figures.values())
    bench_env.report(
        f"daemon memory, {args.servers} API-key servers in one opencode.json, {token_files} token files "
        f"(target <= {TARGET_MIB} MiB)",
        [(label, f"RSS {f['rss_mib']:5.1f} MiB   peak {f['hwm_mib']:5.1f} MiB") for label, f in figures.items()],
        {
            "servers": args.servers,
            "token_files": token_files,
            "target_mib": TARGET_MIB,
            "peak_mib": peak,
            "stages": figures,
        },
    )


if __name__ == "__main__":
    main()
