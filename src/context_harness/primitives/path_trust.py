"""Whether a file can be changed by someone other than the user or root: its owner and mode, and those of the
directories up to `/` and of any symbolic link on the way, as the kernel walks them. A sticky directory (mode
1777: `/tmp`) is accepted when what is in it is the user's or root's: the sticky bit lets nobody else rename or
remove it. `CH_CA_BUNDLE` is held to it (net/ca_bundle.py), and `chctl service install` asks it before it writes
the bundle's path into a service unit. Standard library only: the client uses it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ROOT_UID = 0


def untrusted_because(path: Path, uid: int | None = None) -> str | None:
    """Why someone other than the user (`uid`) or root could change what `path` holds; None when nobody can."""
    found = first_problem(path, os.getuid() if uid is None else uid)
    return None if found is None else found[1]


def first_problem(path: Path, uid: int) -> tuple[Path, str] | None:
    """The first entry someone else could change, and how: along the path as given (its links), then along the
    path resolved (the file and its directories)."""
    given = Path(os.path.abspath(path))
    try:
        return _along(given, uid, follow=False) or _along(Path(os.path.realpath(given)), uid, follow=True)
    except OSError as exc:
        return Path(exc.filename or path), f"{exc.filename or path} cannot be checked ({exc.strerror})"


def _along(path: Path, uid: int, *, follow: bool) -> tuple[Path, str] | None:
    """From `path` up to `/`, the first entry someone else could change (the entry below a sticky directory is
    checked before it: that is what makes the sticky directory safe)."""
    for entry in (path, *path.parents):
        problem = entry_problem(entry, entry.stat() if follow else entry.lstat(), uid, leaf=entry == path)
        if problem is not None:
            return entry, problem
    return None


def entry_problem(entry: Path, info: os.stat_result, uid: int, *, leaf: bool) -> str | None:
    if info.st_uid not in (uid, ROOT_UID):
        return f"{entry} is owned by uid {info.st_uid}, not by you (uid {uid}) or root"
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    if not leaf and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
        return None  # sticky: others cannot rename or remove the entry below, which is the user's or root's
    return f"{entry} can be written by others (mode {stat.S_IMODE(info.st_mode):o})"
