"""Take the listening socket systemd opened for us (the LISTEN_FDS protocol, sd_listen_fds(3)).

With socket activation the socket unit owns `%t/context-harness/chd.sock`: it exists from login,
connections queue while the daemon starts, and a restart loses none. The daemon receives it as an
already-listening descriptor at fd 3 and must not bind, unlink or chmod it.
"""

from __future__ import annotations

import os
import socket

# sd-daemon.h: passed descriptors start right after stdin, stdout and stderr.
SD_LISTEN_FDS_START = 3
_ACTIVATION_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def inherited_listener() -> socket.socket | None:
    """The listening Unix stream socket passed by the service manager, or None.

    None when the variables are absent, name another process (`LISTEN_PID` is not ours: they were
    meant for a parent), count no descriptor, or fd 3 is not a listening AF_UNIX SOCK_STREAM socket;
    the caller then binds its own socket. The variables are removed from `os.environ` in every case
    so that processes we start (notify commands) do not believe fd 3 is meant for them.
    The returned socket is non-blocking and close-on-exec, ready for `asyncio.start_unix_server(sock=...)`.
    """
    listen_pid = os.environ.get("LISTEN_PID", "")
    listen_fds = os.environ.get("LISTEN_FDS", "")
    for name in _ACTIVATION_ENV:
        os.environ.pop(name, None)

    if not (listen_pid.isdigit() and int(listen_pid) == os.getpid()):
        return None
    if not (listen_fds.isdigit() and int(listen_fds) >= 1):
        return None
    return _listener_at(SD_LISTEN_FDS_START)


def _listener_at(fd: int) -> socket.socket | None:
    try:
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
    except OSError:
        return None  # not a socket (or not open): leave the descriptor alone
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
    except OSError:
        listening = False
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close: we only decline to use it
        return None
    sock.setblocking(False)
    os.set_inheritable(fd, False)
    return sock
