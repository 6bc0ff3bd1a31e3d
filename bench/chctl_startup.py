"""`chctl status` wall time against a bare `python -c pass` (the same interpreter), alternating runs.

chctl is the command people type; it should cost about what starting Python costs. Target: median
ratio <= 1.3. The daemon is started first, so the figure is chctl's start-up plus one RPC round trip.
Bytecode is cached, as it is after `pip install`: PYTHONDONTWRITEBYTECODE is dropped for these runs (the
warm-up runs write src/context_harness/**/__pycache__, which git ignores); with it set, every run would
compile chctl from source.

    .venv/bin/python bench/chctl_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import bench_env

TARGET_RATIO = 1.3
WARMUP_RUNS = 3  # fill the page cache and pyc files before anything counts


def wall_time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each command (>= 20)")
    args = parser.parse_args()

    python = sys.executable
    chctl = str(Path(python).parent / "chctl")
    with bench_env.user_env() as env, bench_env.running_daemon(env):
        variables = env.vars()  # CH_NO_AUTOSTART unset: chctl behaves as it does for a user
        variables.pop("PYTHONDONTWRITEBYTECODE", None)
        commands = {
            "python -c pass": [python, "-c", "pass"],
            # The floor for any client that speaks JSON over a socket with the standard library.
            "python -c 'import json, socket'": [python, "-c", "import json, socket"],
            "chctl status": [chctl, "status"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        for i in range(WARMUP_RUNS + args.runs):
            for label, argv in commands.items():  # alternate, so drift in machine load hits both alike
                elapsed = wall_time(argv, variables, env.project)
                if i >= WARMUP_RUNS:
                    times[label].append(elapsed)

    python_ms = bench_env.median_ms(times["python -c pass"])
    floor_ms = bench_env.median_ms(times["python -c 'import json, socket'"])
    chctl_ms = bench_env.median_ms(times["chctl status"])
    ratio = round(chctl_ms / python_ms, 3)
    floor_ratio = round(floor_ms / python_ms, 3)
    bench_env.report(
        f"chctl start-up, median of {args.runs} alternating runs",
        [
            ("python -c pass", f"{python_ms:.1f} ms"),
            ("python -c 'import json, socket'", f"{floor_ms:.1f} ms  (ratio {floor_ratio:.2f})"),
            ("chctl status", f"{chctl_ms:.1f} ms"),
            ("ratio chctl / python", f"{ratio:.2f}  (target <= {TARGET_RATIO})"),
        ],
        {
            "runs": args.runs,
            "python_ms": python_ms,
            "json_socket_floor_ms": floor_ms,
            "chctl_status_ms": chctl_ms,
            "ratio": ratio,
            "floor_ratio": floor_ratio,
            "target_ratio": TARGET_RATIO,
        },
    )


if __name__ == "__main__":
    main()
