"""What an upstream session keeps of each client request in flight: its cancel scope (`Upstream.carrying`).

Concurrency: anyio, as the session's."""

from __future__ import annotations

from typing import Any

import anyio

from context_harness.upstream.messages import lookup_id


class CarriedRequests:
    """The client's requests being carried, by id: one the client cancels (`notifications/cancelled`) is
    stopped, which closes its connection to the server; a server never holds a connection for nobody."""

    def __init__(self) -> None:
        self._scopes: dict[str | int, anyio.CancelScope] = {}

    def add(self, request_id: Any, scope: anyio.CancelScope) -> None:
        key = lookup_id(request_id)
        if key is not None:
            self._scopes[key] = scope

    def done(self, request_id: Any, scope: anyio.CancelScope) -> None:
        key = lookup_id(request_id)
        if key is not None and self._scopes.get(key) is scope:
            del self._scopes[key]

    def cancel(self, request_id: Any) -> None:
        key = lookup_id(request_id)
        scope = self._scopes.pop(key, None) if key is not None else None
        if scope is not None:
            scope.cancel()
