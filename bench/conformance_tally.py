"""The official MCP conformance suite's client scenarios, each run once through an adapter: which pass, and the
tally (`Passed N of 26`).

    python bench/conformance_tally.py                       # chctl (tests/conformance/chctl_client.py)
    python bench/conformance_tally.py --client mcp-remote   # mcp-remote 0.15.1, driven the same way
    ../other/.venv/bin/python bench/conformance_tally.py    # chctl as another checkout's venv installs it

The adapter runs under this Python, so the chctl measured is the one this interpreter imports. Scenarios run
one at a time (their servers and our daemon are timing-sensitive on a loaded machine); the suite's own
verdict (its exit code) decides each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "tests" / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
CONFORMANCE = PEERS / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
ADAPTERS = {
    "chctl": ROOT / "tests" / "conformance" / "chctl_client.py",
    "mcp-remote": ROOT / "tests" / "conformance" / "mcp_remote_client.py",
}
SCENARIO_TIMEOUT_S = 120


def client_scenarios() -> list[str]:
    """The names `conformance list` gives under "Client scenarios"."""
    listed = subprocess.run([NODE, CONFORMANCE, "list"], capture_output=True, text=True, check=True).stdout
    scenarios, in_client = [], False
    for line in listed.splitlines():
        if line.startswith("Client scenarios"):
            in_client = True
        elif in_client and line.strip().startswith("- "):
            scenarios.append(line.strip()[2:].split(" [")[0])
        elif in_client and line.strip() and not line.startswith(" "):
            in_client = False
    return scenarios


def run_scenario(adapter: Path, scenario: str) -> tuple[bool, float]:
    command = f"{sys.executable} {adapter}"
    started = time.monotonic()
    done = subprocess.run(
        [NODE, CONFORMANCE, "client", "--command", command, "--scenario", scenario],
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    return done.returncode == 0, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=sorted(ADAPTERS), default="chctl")
    parser.add_argument("scenarios", nargs="*", help="only these (default: every client scenario)")
    args = parser.parse_args()
    scenarios = args.scenarios or client_scenarios()
    passed, total_s = 0, 0.0
    for scenario in scenarios:
        ok, elapsed = run_scenario(ADAPTERS[args.client], scenario)
        passed += ok
        total_s += elapsed
        print(f"{'pass' if ok else 'FAIL'}  {elapsed:5.1f} s  {scenario}", flush=True)
    print(f"{args.client} ({sys.executable}): passed {passed} of {len(scenarios)} client scenarios in {total_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
