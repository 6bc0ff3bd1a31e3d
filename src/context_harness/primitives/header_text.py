"""What may go into a header we write into opencode's config.

opencode substitutes `{env:VAR}` and `{file:path}` in the raw config text before parsing it, so a value
holding such a reference is config syntax, not data: a token `{env:ANTHROPIC_API_KEY}` would send the
user's other secrets to whoever issued it. Control characters (CR/LF) would break opencode's request.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2 `token`: a header field name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
OPENCODE_SUBSTITUTIONS = ("{env:", "{file:")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be written as a header value; None when it can. Never echoes the value."""
    if any(marker in value for marker in OPENCODE_SUBSTITUTIONS):
        return "contains a {env:...} or {file:...} reference, which opencode would substitute"
    if CONTROL_CHARACTER.search(value):
        return "contains control characters (a line break would split opencode's request)"
    return None


def header_name_problem(name: str) -> str | None:
    if HEADER_NAME.fullmatch(name) is None:
        return "is not a valid header name (letters, digits and !#$%&'*+.^_`|~-)"
    return None
