"""How many saves of an editor saving every 2 ms does our header writer overwrite?

An "editor" thread saves the config in place every 2 ms, each save carrying its sequence number; after each
save it waits 2 ms and checks its number is still there (a later number can only be its own). Meanwhile the
main thread rewrites the managed header as fast as it can with ConfigService.set_header. A save whose number
vanished was overwritten by a write of ours that had read the file before that save.

    .venv/bin/python bench/config_edit_race.py [--saves 4000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from context_harness.config.opencode import FORMAT as OPENCODE
from context_harness.services.config_service import ConfigService

EDITOR_INTERVAL_S = 0.002


def editor(path: Path, saves: int, lost: list[int], done: threading.Event) -> None:
    for n in range(1, saves + 1):
        text = path.read_text()
        # An editor keeps its buffer; here the buffer is the file as it is now, with the person's change.
        head, _, rest = text.partition('"editor": ')
        if rest:
            rest = rest[rest.index(",") :]
            text = head + f'"editor": {n}' + rest
        path.write_text(text)
        time.sleep(EDITOR_INTERVAL_S)
        current = path.read_text()
        if f'"editor": {n},' not in current and f'"editor": {n + 1},' not in current:
            lost.append(n)
    done.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opencode.json"
        path.write_text(
            '{\n  "editor": 0,\n  "mcp": {"srv": {"type": "remote", "url": "https://example.com/mcp"}}\n}\n'
        )
        lost: list[int] = []
        done = threading.Event()
        thread = threading.Thread(target=editor, args=(path, args.saves, lost, done))
        config = ConfigService()
        writes = 0
        started = time.perf_counter()
        thread.start()
        while not done.is_set():
            config.set_header(path, "srv", "Authorization", f"Bearer token-{writes % 2}", OPENCODE)
            writes += 1
        thread.join()
        elapsed = time.perf_counter() - started
    print(f"editor saves      {args.saves}")
    print(f"our header writes {writes} in {elapsed:.1f} s")
    print(f"saves overwritten {len(lost)}")
    print(json.dumps({"bench": "config_edit_race", "saves": args.saves, "writes": writes, "lost": len(lost)}))


if __name__ == "__main__":
    main()
