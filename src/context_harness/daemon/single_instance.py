"""One daemon per CH_HOME: an flock'd lock file, and a socket that is either live (refuse) or stale (replace)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from context_harness.daemon.home_trust import check_socket_dir
from context_harness.stores.atomic import ensure_private_dir

SOCKET_MODE = 0o600


class AlreadyRunning(Exception):
    """Another daemon holds the lock or answers on the socket; the message says which."""


def acquire_lock(lock_file: Path) -> int:
    """Hold an exclusive lock on `lock_file` for the life of the process; returns the fd to keep open."""
    ensure_private_dir(lock_file.parent)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        message = f"another context-harnessd (pid {holder}) is already running for {lock_file.parent}"
        raise AlreadyRunning(message) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def socket_is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind_listener(path: Path) -> socket.socket:
    """Bind the daemon's socket (dir 0700, socket 0600), replacing a stale one left by a crash.

    Raises UntrustedSocketDir when the directory was there already and is not the user's alone."""
    ensure_private_dir(path.parent)
    check_socket_dir(path.parent)
    if path.exists() or path.is_symlink():
        if socket_is_live(path):
            raise AlreadyRunning(f"a daemon is already answering on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The 0700 directory already keeps others out; the chmod makes the socket itself say so too.
        old_umask = os.umask(0o077)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def remove_socket(path: Path, inode: int | None) -> None:
    """Unlink our socket file, but only if it is still the one we bound (a successor may own the path now)."""
    if inode is not None and socket_inode(path) == inode:
        with contextlib.suppress(OSError):
            path.unlink()
