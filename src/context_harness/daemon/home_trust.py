"""CH_HOME and the socket's directory are trusted only if they are the user's own, as ssh trusts ~/.ssh and
gpg-agent ~/.gnupg.

Whoever can write CH_HOME (or its settings, registry, bindings, tokens or client registrations) can make
the daemon run a command (`CH_EVENT_COMMAND` in daemon.env), send tokens to a URL of their choosing, or
write them into a file of their choosing. So the daemon refuses to start on such a home and says which
path is wrong and how to fix it; it never chmods a directory it did not create (that would keep whatever
was planted in it).

The socket's directory matters as much: in a shared runtime directory (`/tmp`, mode 1777) another user can
create `context-harness/` first and wait there, so the daemon would listen where they can replace its socket
with theirs, and every `chctl add -k KEY` would go to them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# What in CH_HOME steers the daemon: settings, the registry (URLs), bindings (where tokens are written),
# tokens, client registrations, secret files, lock files and the registries' cached answers (URLs, again).
STEERING_ENTRIES = (
    "daemon.env",
    "registry.json",
    "bindings.json",
    "tokens",
    "clients",
    "secrets",
    "locks",
    "cache",
    "cache/registries",
)


class UntrustedHome(Exception):
    """CH_HOME, or something in it, belongs to someone else or can be written by others."""


class UntrustedSocketDir(Exception):
    """The directory the socket would be bound in belongs to someone else or can be written by others."""


def path_problem(path: Path, uid: int) -> str | None:
    """Why `path` (if it exists) cannot be trusted: another owner, or writable by group or others."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_uid != uid:
        return f"{path} is owned by uid {info.st_uid}, not by you (uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} can be written by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def check_home(home: Path, uid: int | None = None) -> None:
    """Raise UntrustedHome naming the first untrusted path, with the fix in the message."""
    uid = os.getuid() if uid is None else uid
    for path in (home, *(home / name for name in STEERING_ENTRIES)):
        problem = path_problem(path, uid)
        if problem is not None:
            raise UntrustedHome(
                f"refusing to start: {problem}; check its content (settings, URLs or tokens may have been "
                f"planted), then `chown {uid} {path} && chmod go-w {path}`, or set CH_HOME elsewhere"
            )


def check_socket_dir(directory: Path, uid: int | None = None) -> None:
    """Raise UntrustedSocketDir when `directory` (the socket's parent) is not the user's alone, with the fix."""
    uid = os.getuid() if uid is None else uid
    problem = path_problem(directory, uid)
    if problem is None:
        return
    if directory.stat().st_uid != uid:
        fix = "another user may have made it to catch your keys: have it removed (by its owner or root)"
    else:
        fix = f"`chmod 700 {directory}`"
    raise UntrustedSocketDir(
        f"refusing to start: {problem}, and the socket would be bound there; {fix}, or set CH_SOCKET to a path "
        "in a directory only you can write (e.g. CH_SOCKET=~/.context-harness/run/chd.sock)"
    )
