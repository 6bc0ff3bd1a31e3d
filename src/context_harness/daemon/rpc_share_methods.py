"""The RPC handlers that say which servers other machines may use through `remote.sock` (`chctl share` and
`chctl unshare`): on the local socket only, and nothing is changed for a name that is no server of ours."""

from __future__ import annotations

from typing import Any

from context_harness.daemon.rpc_params import ShareParams
from context_harness.daemon.services import Services
from context_harness.primitives.result import Result, Success
from context_harness.services.server_names import unknown_server


async def share_add(s: Services, p: ShareParams) -> Result[dict[str, Any]]:
    for name in p.names:  # a typo shared is a name another machine could later claim: nothing is changed
        if (unknown := s.names.unknown(name)) is not None:
            return unknown
    return Success({"shared": sorted(s.shared.change(p.names, shared=True))})


async def share_remove(s: Services, p: ShareParams) -> Result[dict[str, Any]]:
    shared = s.shared.load()
    for name in p.names:
        if name not in shared and not s.names.is_known(name):
            return unknown_server(name, shared, s.names.yours())
    return Success({"shared": sorted(s.shared.change(p.names, shared=False))})
