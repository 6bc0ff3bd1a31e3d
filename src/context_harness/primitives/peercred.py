"""Who is on the other end of a Unix socket: SO_PEERCRED on Linux, LOCAL_PEERCRED (getpeereid) on macOS."""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

_LINUX_UCRED = struct.Struct("3i")  # pid, uid, gid
_MACOS_SOL_LOCAL = 0
_MACOS_LOCAL_PEERCRED = 0x001
_MACOS_LOCAL_PEERPID = 0x002
_MACOS_XUCRED = struct.Struct("IIh16I")  # cr_version, cr_uid, cr_ngroups, cr_groups[16] (with padding)


def peer_uid(sock: socket.socket) -> int | None:
    """The peer's uid, or None when the platform cannot tell (then the caller refuses the peer)."""
    return peer_ids(sock)[0]


def peer_ids(sock: socket.socket) -> tuple[int | None, int | None]:
    """The peer's uid and process id, each None when the platform cannot tell. The pid is for the log (who
    read a token); only the uid decides anything."""
    try:
        if sys.platform.startswith("linux"):
            pid, uid, _gid = _LINUX_UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _LINUX_UCRED.size)
            )
            return int(uid), int(pid)
        if sys.platform == "darwin":
            raw = sock.getsockopt(_MACOS_SOL_LOCAL, _MACOS_LOCAL_PEERCRED, _MACOS_XUCRED.size + 4)
            pid = struct.unpack("i", sock.getsockopt(_MACOS_SOL_LOCAL, _MACOS_LOCAL_PEERPID, 4))[0]
            return int(struct.unpack_from("II", raw)[1]), int(pid)
    except OSError:
        return None, None
    return None, None


def listener_uid(sock: socket.socket, path: Path) -> int | None:
    """The uid of whoever listens on `path`, `sock` being our connection to it: the kernel's word where it gives
    one, else the socket file's owner (its listener bound it); None when neither can be had."""
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        return peer_uid(sock)
    try:
        return path.stat().st_uid
    except OSError:
        return None
