"""The recording proxy (tests/peers/recording_proxy.py) as a test uses it: start it, read what it was sent."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.peer_process import PeerProcess, start_peer

SCRIPT = Path(__file__).resolve().parents[1] / "peers" / "recording_proxy.py"


@dataclass
class RecordingProxy:
    url: str
    record: Path
    peer: PeerProcess

    def requests(self) -> list[dict[str, Any]]:
        """Every request it was sent so far: method, target, headers, body."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    @property
    def where(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> None:
        self.peer.stop()


def start_recording_proxy(directory: Path, answer: int | None = None) -> RecordingProxy:
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / "proxy-record.jsonl"
    argv = [sys.executable, str(SCRIPT), "--record", str(record), *(["--answer", str(answer)] if answer else [])]
    peer = start_peer(argv, log_path=directory / "proxy.log")
    return RecordingProxy(str(peer.ready["url"]), record, peer)
