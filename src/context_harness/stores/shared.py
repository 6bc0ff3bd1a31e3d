"""Which servers the user shared with other machines (`chctl share`): names only, in CH_HOME/shared.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import structlog
from pydantic import TypeAdapter, ValidationError

from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)

_Names = TypeAdapter(list[str])


class SharedStore:
    """Read at every remote request (a few bytes), so `chctl unshare` takes effect on the next one."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._changing = threading.Lock()

    def load(self) -> set[str]:
        try:
            return set(_Names.validate_json(self.file.read_bytes()))
        except FileNotFoundError:
            return set()
        except (ValidationError, ValueError):
            log.error("shared_unreadable", path=str(self.file))  # nothing shared rather than a guess
            return set()

    def is_shared(self, name: str) -> bool:
        return name in self.load()

    def change(self, names: list[str], shared: bool) -> set[str]:
        with self._changing:
            current = self.load()
            current = current | set(names) if shared else current - set(names)
            ensure_private_dir(self.file.parent)
            atomic_write_bytes(self.file, json.dumps(sorted(current)).encode(), mode=PRIVATE_FILE_MODE)
            return current
