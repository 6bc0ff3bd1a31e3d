"""Loopback ports for tests."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound once by the OS, then released): connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
