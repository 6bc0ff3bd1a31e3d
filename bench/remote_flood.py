"""What a flood of connections to `remote.sock` costs the daemon, and whether the laptop's own chctl still answers.

The far end of an SSH forward (a compromised dev box) keeps --connections connections to `remote.sock` open,
each asking `bridge.open` for a shared server; one the daemon closes or refuses is opened again at once
(tests/support/flood.py). Meanwhile `daemon.status` is asked every 50 ms on `chd.sock` (a thread of its own,
each call on a connection of its own). Once every connection has made its first attempt, the local
`chctl token` and `chctl status` run. Reported: bridges held and attempts refused, the daemon's peak RSS
(VmHWM) over idle, the slowest `daemon.status`, whether `chctl token` and `chctl status` answered, and the
daemon's log: its size and its EMFILE lines.

The daemon starts with a soft RLIMIT_NOFILE of --nofile (a desktop session's usual 1024; the hard limit is left
as it is).

    .venv/bin/python bench/remote_flood.py [--connections 1000] [--nofile 1024] [--seconds 3]
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from pathlib import Path
from typing import Any

import bench_env

from tests.support.daemon import DaemonProcess, chctl, rpc
from tests.support.flood import flooding, request_line

KEY = "k-flood-0123456789"
STATUS = request_line("daemon.status")
PROBE_TIMEOUT_S = 10.0


def status_probe(path: Path, stop: threading.Event, latencies: list[float]) -> None:
    """`daemon.status` every 50 ms until `stop`; a call with no answer counts as PROBE_TIMEOUT_S."""
    while not stop.is_set():
        began = time.perf_counter()
        try:
            reply = rpc(path, None, raw=STATUS, timeout=PROBE_TIMEOUT_S)
            answered = isinstance(reply, dict) and "result" in reply
        except (OSError, ValueError):
            answered = False
        latencies.append(time.perf_counter() - began if answered else PROBE_TIMEOUT_S)
        stop.wait(0.05)


def answered(done: Any, expect: str = "") -> str:
    if done.returncode == 0 and expect in done.stdout:
        return "answered"
    return (done.stderr.strip().splitlines() or ["no output"])[0][:80]


def prepare(env: bench_env.UserEnv) -> None:
    assert chctl(env, "init").returncode == 0
    assert chctl(env, "add", "srv", "--bridge", "--url", "http://127.0.0.1:9/mcp").returncode == 0
    keyed = chctl(env, "add", "keyed", "--url", "http://127.0.0.1:9/mcp", "--key-header", "X-Key", "-k", KEY)
    assert keyed.returncode == 0, keyed.stderr
    assert chctl(env, "share", "srv").returncode == 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    prlimit = ["prlimit", f"--nofile={args.nofile}:{hard}", "--"]
    with bench_env.user_env() as env:
        daemon = DaemonProcess(env, extra_env=dict(bench_env.QUIET_DAEMON), wrapper=prlimit).start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            prepare(env)
            idle = bench_env.proc_status(pid)
            cpu_before = bench_env.cpu_seconds(pid)
            log_before = len(daemon.log())
            latencies: list[float] = []
            stop = threading.Event()
            probe = threading.Thread(target=status_probe, args=(env.socket, stop, latencies))
            probe.start()
            try:
                open_bridge = request_line("bridge.open", {"name": "srv"})
                with flooding(env.socket.parent / "remote.sock", args.connections, open_bridge) as flood:
                    flood.first_round.wait(60)
                    token = chctl(env, "token", "keyed", timeout=120)
                    status = chctl(env, "status", timeout=120)
                    stop.wait(args.seconds)
            finally:
                stop.set()
                probe.join()
            peak = bench_env.proc_status(pid)
            cpu_after = bench_env.cpu_seconds(pid)
            log = daemon.log()[log_before:]
        finally:
            daemon.stop()
    return {
        "held": flood.held,
        "outcomes": dict(flood.outcomes),
        "refused": flood.outcomes["refused"],
        "unanswered": sum(flood.outcomes[k] for k in ("no answer", "closed", "not connected")),
        "token": answered(token, KEY),
        "status": answered(status),
        "idle_peak_mib": round(idle["VmHWM"] / bench_env.MIB, 1),
        "peak_mib": round(peak["VmHWM"] / bench_env.MIB, 1),
        "extra_mib": round((peak["VmHWM"] - idle["VmHWM"]) / bench_env.MIB, 1),
        "slowest_status_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "median_status_ms": bench_env.median_ms(latencies) if latencies else None,
        "daemon_cpu_s": round(cpu_after - cpu_before, 2),
        "status_calls": len(latencies),
        "log_lines": log.count("\n"),
        "log_kib": round(len(log.encode()) / 1024, 1),
        "emfile_lines": sum(1 for line in log.splitlines() if "Too many open files" in line or "EMFILE" in line),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000, help="connections to remote.sock, kept open")
    parser.add_argument("--nofile", type=int, default=1024, help="the daemon's soft RLIMIT_NOFILE at start")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long the flood goes on after chctl ran")
    args = parser.parse_args()
    r = run(args)
    rows = [
        (
            "remote connections",
            f"{args.connections}: {r['held']} bridges held; attempts refused {r['refused']}, "
            f"unanswered {r['unanswered']}",
        ),
        ("daemon peak memory", f"{r['idle_peak_mib']} -> {r['peak_mib']} MiB (+{r['extra_mib']})"),
        (
            "daemon.status",
            f"slowest {r['slowest_status_ms']} ms, median {r['median_status_ms']} ms, of {r['status_calls']}",
        ),
        ("daemon CPU meanwhile", f"{r['daemon_cpu_s']} s"),
        ("local chctl token", r["token"]),
        ("local chctl status", r["status"]),
        ("daemon log", f"{r['log_lines']} lines, {r['log_kib']} KiB, {r['emfile_lines']} EMFILE lines"),
    ]
    bench_env.report(f"{args.connections} connections to remote.sock", rows, {"connections": args.connections, **r})


if __name__ == "__main__":
    main()
