"""`chctl search` against `chctl status`, and what a hostile registry costs the daemon.

1. Warm cache: a local registry (tests/peers/mcp_registry.py, in a process of its own on 127.0.0.1) with
   --servers entries, 20 of which hold "weather" in their name; the daemon knows three configured servers (so
   `chctl status` has rows to read). After one search fills the cache, `chctl search weather`, `chctl status`
   and `python -c pass` are run alternately --runs times; medians, and the ratio search / status. Target:
   search <= status.
2. Attacks (a fresh daemon each): a registry answering a 1 GiB list (no length) and one that never ends (a byte
   every half second). While `chctl search` runs, `daemon.status` is asked every 50 ms on a connection of its
   own. Reported: the daemon's peak RSS (VmHWM) before and after, the slowest `daemon.status`, how long the
   search took and what it said.

    .venv/bin/python bench/registry_search.py [--runs 30] [--servers 200] [--attacks gigabyte endless]
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
from chctl_startup import wall_time
from hostile_server import status_probe

from tests.peers.mcp_registry import LocalRegistry, remote, server_json
from tests.support.daemon import chctl

CHCTL = Path(sys.executable).parent / "chctl"
ATTACKS = ("gigabyte", "endless")
WARMUP_RUNS = 3


# --- the registries (run as `registry_search.py --serve MODE`, in a process of their own) --------------------


def serve(mode: str, servers: int) -> None:
    if mode == "registry":
        registry = LocalRegistry()
        for number in range(servers):
            topic = "weather" if number % (servers // 20 or 1) == 0 else "tools"
            name = f"io.bench/{topic}-{number:04}"
            registry.publish(server_json(name, f"A {topic} server, number {number}", remotes=[remote("https://x/mcp")]))
        app = registry.app()
    else:
        app = web.Application()
        app.router.add_get("/{tail:.*}", gigabyte if mode == "gigabyte" else endless)

    bench_env.serve_on_loopback(app)


async def gigabyte(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b'{"server": {"name": "io.x/y", "description": "' + b"x" * (1024 * 1024 - 64) + b'"}},'
    try:
        await response.write(b'{"servers": [')
        for _ in range(1024):
            await response.write(chunk)
    except (ConnectionError, RuntimeError):
        pass
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(b'{"servers": [')
        while True:
            await asyncio.sleep(0.5)
            await response.write(b" ")
    except (ConnectionError, RuntimeError):
        pass
    return response


def start_registry(mode: str, servers: int) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, "--servers", str(servers)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    return process, f"http://127.0.0.1:{int(process.stdout.readline())}"


# --- 1. warm cache ----------------------------------------------------------------------------------------------


def warm_cache(runs: int, servers: int) -> dict[str, Any]:
    registry, base = start_registry("registry", servers)
    try:
        with bench_env.user_env() as env, bench_env.running_daemon(env, {"CH_REGISTRY_URL": base}):
            variables = {**env.vars(), "CH_NO_AUTOSTART": "1", "BENCH_KEY": "bench-not-a-secret"}
            variables.pop("PYTHONDONTWRITEBYTECODE", None)
            assert chctl(env, "init").returncode == 0
            for name in ("one", "two", "three"):
                url = f"https://{name}.example.com/mcp"
                subprocess.run(
                    [str(CHCTL), "add", name, "--url", url, "--api-key-env", "BENCH_KEY"],
                    env=variables,
                    cwd=env.project,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "chctl status": [str(CHCTL), "status"],
                "chctl search weather": [str(CHCTL), "search", "weather"],
            }
            times: dict[str, list[float]] = {label: [] for label in commands}
            for i in range(WARMUP_RUNS + runs):
                for label, argv in commands.items():
                    took = wall_time(argv, variables, env.project)
                    if i >= WARMUP_RUNS:
                        times[label].append(took)
            found = json.loads(chctl(env, "search", "weather", "--json").stdout)
    finally:
        registry.kill()
        registry.wait()
    medians = {label: bench_env.median_ms(samples) for label, samples in times.items()}
    return {
        "runs": runs,
        "rows": sum(1 for s in found["servers"] if s["registry"] != "chctl"),
        "python_ms": medians["python -c pass"],
        "status_ms": medians["chctl status"],
        "search_ms": medians["chctl search weather"],
        "ratio_search_status": round(medians["chctl search weather"] / medians["chctl status"], 3),
    }


# --- 2. attacks -------------------------------------------------------------------------------------------------


async def attack_once(env: bench_env.UserEnv, daemon: bench_env.DaemonProcess) -> dict[str, Any]:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    idle = bench_env.proc_status(pid)
    stop = asyncio.Event()
    probe = asyncio.create_task(status_probe(env.socket, stop))
    began = time.perf_counter()
    search = await asyncio.create_subprocess_exec(
        str(CHCTL),
        "search",
        "weather",
        env={**env.vars(), "CH_NO_AUTOSTART": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await search.communicate()
    took = time.perf_counter() - began
    stop.set()
    latencies = await probe
    peak = bench_env.proc_status(pid)
    said = [line for line in stderr.decode(errors="replace").splitlines() if line.startswith("warning:")]
    return {
        "idle_peak_mib": round(idle["VmHWM"] / bench_env.MIB, 1),
        "peak_mib": round(peak["VmHWM"] / bench_env.MIB, 1),
        "extra_mib": round((peak["VmHWM"] - idle["VmHWM"]) / bench_env.MIB, 1),
        "slowest_status_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "status_calls": len(latencies),
        "search_s": round(took, 1),
        "outcome": (said[0] if said else "no warning")[:100],
    }


def run_attack(attack: str) -> dict[str, Any]:
    registry, base = start_registry(attack, 0)
    try:
        with bench_env.user_env() as env, bench_env.running_daemon(env, {"CH_REGISTRY_URL": base}) as daemon:
            assert chctl(env, "status").returncode == 0
            return asyncio.run(attack_once(env, daemon))
    finally:
        registry.kill()
        registry.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--servers", type=int, default=200, help="entries in the local registry")
    parser.add_argument("--attacks", nargs="*", choices=ATTACKS, default=list(ATTACKS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.servers)
        return
    warm = warm_cache(args.runs, args.servers)
    rows = [
        ("registry rows shown", warm["rows"]),
        ("python -c pass", f"{warm['python_ms']:.1f} ms"),
        ("chctl status (3 servers)", f"{warm['status_ms']:.1f} ms"),
        ("chctl search weather (warm)", f"{warm['search_ms']:.1f} ms"),
        ("ratio search / status", f"{warm['ratio_search_status']:.2f}  (target <= 1)"),
    ]
    figures: dict[str, Any] = dict(warm)
    for attack in args.attacks:
        r = run_attack(attack)
        rows.append(
            (
                attack,
                f"peak {r['idle_peak_mib']} -> {r['peak_mib']} MiB (+{r['extra_mib']}), slowest daemon.status "
                f"{r['slowest_status_ms']} ms of {r['status_calls']}, search {r['search_s']} s: {r['outcome']}",
            )
        )
        figures.update({f"{attack}_{key}": value for key, value in r.items()})
    bench_env.report(f"chctl search, median of {args.runs} alternating runs; hostile registries", rows, figures)


if __name__ == "__main__":
    main()
