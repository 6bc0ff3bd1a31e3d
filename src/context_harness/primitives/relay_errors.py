"""The relay's own answer to a request it could not deliver — a login is needed, the server or the daemon is
unreachable — built here and nowhere else: `chctl bridge`, the daemon's relay and a delegated bridge all send it.

Readable by a person and by the model: the message with its hint, our `ErrorCode` name in `data.code`.
Standard library only, importing nothing: `chctl bridge` uses it and must start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any

# JSON-RPC leaves -32000..-32099 to the implementation; the relay's own failures use this one.
RELAY_ERROR = -32001


def relay_error(request_id: Any, message: str, code: str, hint: str | None = None) -> dict[str, Any]:
    """The JSON-RPC error response to request `request_id`: `message` (with `hint`, when there is one) and the
    `ErrorCode` name `code`."""
    data: dict[str, Any] = {"code": code}
    if hint:
        data["hint"] = hint
    text = f"{message} ({hint})" if hint else message
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": RELAY_ERROR, "message": text, "data": data}}
