"""Crash-safe file replacement: a reader sees the old bytes or the new ones, never a mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    """Create `path`, and any missing directory above it, 0700 whatever the umask. A directory that already
    exists is left as it is: an unsafe CH_HOME, or socket directory, is refused by the daemon
    (daemon/home_trust.py), never quietly fixed."""
    if not path.parent.is_dir():
        ensure_private_dir(path.parent)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        return path
    path.chmod(PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask
    return path


class ChangedBeforeRename(Exception):
    """`unchanged` said the target changed while the temp file was written: nothing was replaced."""


def atomic_write_bytes(
    path: Path, data: bytes, mode: int | None = None, unchanged: Callable[[], bool] | None = None
) -> None:
    """Write `data` to `path` via temp file + fsync + rename, then fsync the directory.

    `mode`: the new file's permission bits; None keeps the existing file's mode (0644 for a new one).
    The temp file is created 0600, so a secret is never readable by others, not even for an instant.
    `unchanged`: checked after the (slow) write and fsync, right before the rename; False raises
    ChangedBeforeRename and leaves `path` alone, so a save made meanwhile by someone else survives.
    """
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            os.fsync(tmp.fileno())
        if unchanged is not None and not unchanged():
            raise ChangedBeforeRename(str(path))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
