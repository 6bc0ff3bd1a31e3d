"""JSON for chctl's one request and one reply, without importing `json`.

`import json` pulls in `re` and `enum`, about 5 ms: half of a bare `python3`'s start-up. The C accelerator
`_json`, which `json` itself uses for the real work, parses and writes the same JSON and imports nothing.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any


class _ScannerSettings:
    """What `_json.make_scanner` reads from a `json.JSONDecoder`: the defaults of `json.loads`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


def loads(text: str) -> Any:
    """Parse one JSON document; ValueError when it is not one."""
    text = text.strip(" \t\r\n")
    try:
        # typeshed types the argument as a JSONDecoder; the scanner only reads the attributes above.
        value, end = _json.make_scanner(_ScannerSettings())(text, 0)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if end != len(text):
        raise ValueError("extra data after the JSON document")
    return value


def dumps(value: Any) -> str:
    """Compact JSON, ASCII only (what `json.dumps(value, separators=(",", ":"))` writes)."""
    encode = _json.make_encoder({}, _unserialisable, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encode(value, 0))


def _unserialisable(value: Any) -> Any:
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")
