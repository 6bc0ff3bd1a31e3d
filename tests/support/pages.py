"""A `tools/list` answer as a hostile server pads it: many small tools (a dict per tool and per property once
decoded), its id last, as the TypeScript SDK writes its responses. In pieces, so that it can be framed as one
JSON body, an SSE event of many lines (a line a piece) or a single line."""

from __future__ import annotations

import json
from typing import Any

TOOL = {
    "name": "t",
    "description": "does a thing",
    "inputSchema": {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "a parameter"} for i in range(4)},
    },
}


def tools_page(size: int, request_id: Any, cursor: str | None = None) -> list[bytes]:
    """A whole answer of about `size` bytes."""
    one = json.dumps(TOOL, separators=(",", ":")).encode()
    count = size // (len(one) + 1)
    pieces = [b'{"result":{"tools":['] + [one + b","] * (count - 1) + [one + b"]"]
    pieces.append((f',"nextCursor":"{cursor}"' if cursor else "").encode() + b"}")
    pieces.append(f',"jsonrpc":"2.0","id":{json.dumps(request_id)}}}'.encode())
    return pieces


def tools_in(pieces: list[bytes]) -> int:
    return sum(piece.startswith(b'{"name"') for piece in pieces)
