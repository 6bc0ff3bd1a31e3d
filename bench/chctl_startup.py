"""`chctl status` and `chctl token NAME --json` wall time against a bare `python -c pass` (the same
interpreter), alternating runs.

chctl is the command people type, and `chctl token` runs at every agent connect (Claude Code's
`headersHelper`); each should cost about what starting Python costs. Target: median ratio <= 1.3. The daemon
is started first, so the figure is chctl's start-up plus one RPC round trip; `chctl token` reads an API key
stored beforehand (an OAuth token that is valid costs the same: no refresh is due).

The chctl measured is the one README's install command produces: that command (the line of README.md
that starts with `python3 -m venv`) is run with its `.venv` pointed at a temp dir, so the console-script
wrapper is the one the pip of that command writes (pip 23, as Debian's venv has it, writes one that imports
`re`). `--venv DIR` keeps that installation in DIR (made there on the first run, reused after);
`--chctl PATH` measures another chctl instead (e.g. `.venv/bin/chctl`, the editable development one).
Bytecode is cached, as it is after `pip install`: PYTHONDONTWRITEBYTECODE is dropped for these runs.

    .venv/bin/python bench/chctl_startup.py [--runs 30] [--venv DIR | --chctl PATH]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bench_env

TARGET_RATIO = 1.3
BENCH_SERVER = "bench-key"  # an API-key server added before the runs, for `chctl token`
WARMUP_RUNS = 3  # fill the page cache and pyc files before anything counts


def wall_time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def readme_install_command() -> str:
    """README.md's install line: the one that starts with `python3 -m venv .venv`."""
    for line in (bench_env.REPO / "README.md").read_text().splitlines():
        if line.startswith("python3 -m venv .venv "):
            return line
    raise SystemExit("README.md has no line starting with `python3 -m venv .venv`")


def install_as_readme_says(venv: Path) -> None:
    """Run README's install steps from the repository root with `.venv` replaced by `venv`.

    The steps that run chctl are left out: a chctl run here would start a daemon in the real HOME.
    """
    for step in readme_install_command().split("&&"):
        words = shlex.split(step)
        argv = [str(venv) + word.removeprefix(".venv") if word.startswith(".venv") else word for word in words]
        if Path(argv[0]).name == "chctl":
            continue
        print("running:", shlex.join(argv), file=sys.stderr)
        subprocess.run(argv, cwd=bench_env.REPO, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def readme_installation(keep_in: Path | None) -> Iterator[Path]:
    """The bin directory of an installation made by README's command (in `keep_in`, else a temp dir)."""
    if keep_in is not None:
        if not (keep_in / "bin" / "chctl").exists():
            install_as_readme_says(keep_in)
        yield keep_in / "bin"
        return
    with tempfile.TemporaryDirectory(prefix="chctl-install-") as root:
        install_as_readme_says(Path(root) / "venv")
        yield Path(root) / "venv" / "bin"


def wrapper_imports(chctl: Path) -> str:
    """The modules the console-script wrapper itself imports (pip 23's imports `re`)."""
    lines = chctl.read_text().splitlines()
    return ", ".join(line.split()[1] for line in lines if line.startswith("import "))


def store_a_key(chctl: str, env: dict[str, str], project: Path) -> None:
    """An API-key server for `chctl token` to read (no request reaches its URL)."""
    for argv in (
        [chctl, "init"],
        [chctl, "add", BENCH_SERVER, "--url", "https://mcp.example.com/mcp", "--api-key-env", "BENCH_KEY"],
    ):
        subprocess.run(
            argv, env={**env, "BENCH_KEY": "bench-not-a-secret"}, cwd=project, check=True, stdout=subprocess.DEVNULL
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each command (>= 20)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, help="keep README's installation in this directory (reused if there)")
    where.add_argument("--chctl", type=Path, help="measure this chctl instead of a fresh README installation")
    args = parser.parse_args()

    if args.chctl is not None:
        measure(args.chctl.absolute(), args.runs)
        return
    with readme_installation(args.venv.absolute() if args.venv else None) as bin_dir:
        measure(bin_dir / "chctl", args.runs)


def measure(chctl_path: Path, runs: int) -> None:
    # The interpreter chctl's wrapper names: `python -c pass` must start the same one.
    python = chctl_path.read_text().splitlines()[0].removeprefix("#!").strip()
    chctl = str(chctl_path)
    with bench_env.user_env() as env, bench_env.running_daemon(env):
        variables = env.vars()  # CH_NO_AUTOSTART unset: chctl behaves as it does for a user
        variables.pop("PYTHONDONTWRITEBYTECODE", None)
        store_a_key(chctl, variables, env.project)
        commands = {
            "python -c pass": [python, "-c", "pass"],
            # The floor for any client that speaks JSON over a socket with the standard library.
            "python -c 'import json, socket'": [python, "-c", "import json, socket"],
            "chctl status": [chctl, "status"],
            "chctl token": [chctl, "token", BENCH_SERVER, "--json"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        for i in range(WARMUP_RUNS + runs):
            for label, argv in commands.items():  # alternate, so drift in machine load hits both alike
                elapsed = wall_time(argv, variables, env.project)
                if i >= WARMUP_RUNS:
                    times[label].append(elapsed)

    python_ms = bench_env.median_ms(times["python -c pass"])
    floor_ms = bench_env.median_ms(times["python -c 'import json, socket'"])
    chctl_ms = bench_env.median_ms(times["chctl status"])
    token_ms = bench_env.median_ms(times["chctl token"])
    ratio = round(chctl_ms / python_ms, 3)
    token_ratio = round(token_ms / python_ms, 3)
    floor_ratio = round(floor_ms / python_ms, 3)
    bench_env.report(
        f"chctl start-up, median of {runs} alternating runs",
        [
            ("chctl", chctl),
            ("its wrapper imports", wrapper_imports(chctl_path)),
            ("python -c pass", f"{python_ms:.1f} ms"),
            ("python -c 'import json, socket'", f"{floor_ms:.1f} ms  (ratio {floor_ratio:.2f})"),
            ("chctl status", f"{chctl_ms:.1f} ms"),
            ("ratio chctl / python", f"{ratio:.2f}  (target <= {TARGET_RATIO})"),
            (f"chctl token {BENCH_SERVER} --json", f"{token_ms:.1f} ms"),
            ("ratio chctl token / python", f"{token_ratio:.2f}  (target <= {TARGET_RATIO})"),
        ],
        {
            "runs": runs,
            "chctl": chctl,
            "wrapper_imports": wrapper_imports(chctl_path),
            "python_ms": python_ms,
            "json_socket_floor_ms": floor_ms,
            "chctl_status_ms": chctl_ms,
            "ratio": ratio,
            "chctl_token_ms": token_ms,
            "token_ratio": token_ratio,
            "floor_ratio": floor_ratio,
            "target_ratio": TARGET_RATIO,
        },
    )


if __name__ == "__main__":
    main()
