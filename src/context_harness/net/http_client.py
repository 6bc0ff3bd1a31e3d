"""The daemon's connection pools — the authorization servers', the bridged servers' — each an `HttpClient`
holding one aiohttp session from `net.session`."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from context_harness.net.session import NetworkSettings, new_session


class HttpClient:
    """One client session (a connection pool) for outgoing requests, made on first use inside the running loop.

    New network settings (a reload) mean a new session for what starts from then on; the bridges open at the
    time keep the old one (closed at shutdown) until they reconnect."""

    def __init__(
        self, network: NetworkSettings, make: Callable[[NetworkSettings], aiohttp.ClientSession] = new_session
    ) -> None:
        self.network = network
        self._make = make
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._make(self.network)
        return self._session

    def configure(self, network: NetworkSettings) -> None:
        if network == self.network:
            return
        self.network = network
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def close(self) -> None:
        for session in [*self._retired, *([self._session] if self._session else [])]:
            await session.close()
