"""Test names for this machine: the hosts in `CH_TEST_HOSTS` (comma-separated, e.g. `mcp.test`) resolve to
127.0.0.1 for the peers that use `connector()` (the fake browser, the resource server's introspection), as
mitmproxy's addon (tests/support/mitm_hosts.py) maps them for the daemon's proxied traffic.

The daemon reaches loopback directly whatever the proxy variables say, so a test that proves traffic crosses a
proxy names its servers by a name that is not loopback; the peers that talk to those servers directly need the
same name to resolve. Nothing outside the test peers resolves it: the daemon itself never sees 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

VARIABLE = "CH_TEST_HOSTS"


def mapped() -> frozenset[str]:
    return frozenset(name.strip().lower() for name in os.environ.get(VARIABLE, "").split(",") if name.strip())


class MappedResolver(AbstractResolver):
    """The mapped names to 127.0.0.1, every other name as aiohttp's default resolver answers."""

    def __init__(self) -> None:
        self._names = mapped()
        self._default = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower() not in self._names:
            return await self._default.resolve(host, port, family)
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        await self._default.close()


def connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """A connector that resolves the mapped names (and the rest as usual)."""
    return aiohttp.TCPConnector(resolver=MappedResolver(), **kwargs)
