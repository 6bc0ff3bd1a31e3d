"""systemd's readiness protocol by hand: one datagram to `$NOTIFY_SOCKET`.

Written out because the PyPI `sdnotify` package has had no release since 2017 and the protocol is
a single `sendto`. See sd_notify(3): the variable holds a filesystem path or, with a leading `@`,
a name in Linux's abstract socket namespace.
"""

from __future__ import annotations

import os
import socket

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "RELOADING=1", "STOPPING=1") to the service manager.

    Returns True when the datagram was sent; False when `$NOTIFY_SOCKET` is unset (not run by a
    service manager that asked for it) or the socket cannot be reached. Never raises for those:
    the caller decides whether to log.
    """
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):
        # Abstract namespace: the kernel wants a leading NUL byte instead of the `@`.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
