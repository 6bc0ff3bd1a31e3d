"""What registries answered, kept so that a second search is instant and a registry that is down (the official
one is a preview with no uptime promise) still has its last answer shown, with its age.

One JSON file per question (a search at one registry, one server version) in `CH_HOME/cache/registries/`, 0600
in a 0700 directory: what it holds decides where `chctl add` points a server while the registry is down, so it
is kept like the rest of CH_HOME (the daemon refuses a cache directory others can write). What is stored has
already been read (`registries.api`) and is read again the same way when it is loaded. The most recent answers
are also kept in memory: a warm search reads no file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)

# Distinct questions kept on disk (searches and server versions); the least recently written go first.
MAX_FILES = 256
# An answer is at most a few hundred entries (one search: 5 pages of 100): a larger file is not ours.
MAX_FILE_BYTES = 16 * 1024 * 1024
MEMORY_ITEMS = 64  # answers kept in memory as well


@dataclass(frozen=True, slots=True)
class Cached:
    data: Any
    fetched_at: float  # wall clock, Unix seconds


class RegistryCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._memory: OrderedDict[str, Cached] = OrderedDict()

    def get(self, key: str) -> Cached | None:
        """The last answer stored under `key` (memory first, then disk), or None."""
        cached = self._memory.get(key)
        if cached is not None:
            self._memory.move_to_end(key)
            return cached
        cached = self._read(key)
        if cached is not None:
            self._remember(key, cached)
        return cached

    def put(self, key: str, data: Any, fetched_at: float) -> None:
        cached = Cached(data, fetched_at)
        self._remember(key, cached)
        document = {"key": key, "fetched_at": fetched_at, "data": data}
        try:
            ensure_private_dir(self.directory.parent)  # `cache/` too: the daemon refuses one others can write
            ensure_private_dir(self.directory)
            atomic_write_bytes(self._path(key), json.dumps(document).encode(), mode=PRIVATE_FILE_MODE)
            self._prune()
        except OSError as exc:  # a cache that cannot be written is only slower
            log.warning("registry_cache_not_written", path=str(self.directory), error=exc.strerror or str(exc))

    def _read(self, key: str) -> Cached | None:
        path = self._path(key)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return None
            document = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(document, dict) or document.get("key") != key:
            return None
        fetched_at = document.get("fetched_at")
        if not isinstance(fetched_at, (int, float)):
            return None
        return Cached(document.get("data"), float(fetched_at))

    def _remember(self, key: str, cached: Cached) -> None:
        self._memory[key] = cached
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_ITEMS:
            self._memory.popitem(last=False)

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _prune(self) -> None:
        files = [entry for entry in os.scandir(self.directory) if entry.name.endswith(".json")]
        if len(files) <= MAX_FILES:
            return
        files.sort(key=lambda entry: entry.stat().st_mtime)
        for entry in files[: len(files) - MAX_FILES]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
