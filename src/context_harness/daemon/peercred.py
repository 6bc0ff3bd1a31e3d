"""Who is on the other end of a Unix socket: SO_PEERCRED on Linux, LOCAL_PEERCRED (getpeereid) on macOS."""

from __future__ import annotations

import socket
import struct
import sys

_LINUX_UCRED = struct.Struct("3i")  # pid, uid, gid
_MACOS_SOL_LOCAL = 0
_MACOS_LOCAL_PEERCRED = 0x001
_MACOS_XUCRED = struct.Struct("IIh16I")  # cr_version, cr_uid, cr_ngroups, cr_groups[16] (with padding)
_MACOS_LOCAL_PEERPID = 0x002


def peer_uid(sock: socket.socket) -> int | None:
    """The peer's uid, or None when the platform cannot tell (then the caller refuses the peer)."""
    try:
        if sys.platform.startswith("linux"):
            _pid, uid, _gid = _LINUX_UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _LINUX_UCRED.size)
            )
            return int(uid)
        if sys.platform == "darwin":
            raw = sock.getsockopt(_MACOS_SOL_LOCAL, _MACOS_LOCAL_PEERCRED, _MACOS_XUCRED.size + 4)
            return int(struct.unpack_from("II", raw)[1])
    except OSError:
        return None
    return None


def peer_pid(sock: socket.socket) -> int | None:
    """The peer's process id (for the log: who read a token), or None when the platform cannot tell."""
    try:
        if sys.platform.startswith("linux"):
            pid, _uid, _gid = _LINUX_UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _LINUX_UCRED.size)
            )
            return int(pid)
        if sys.platform == "darwin":
            return int(struct.unpack("i", sock.getsockopt(_MACOS_SOL_LOCAL, _MACOS_LOCAL_PEERPID, 4))[0])
    except OSError:
        return None
    return None
