"""The one gate for values from outside (a token endpoint, `chctl add`, registry.json, an imported file) that
we write into an agent's config.

Each client substitutes parts of its config text before it uses it (opencode `{env:VAR}` and `{file:path}`,
Claude Code `${VAR}`, Gemini CLI `$VAR`): a value holding such a marker is config syntax, not data, and a token
`{env:ANTHROPIC_API_KEY}` would send the user's other secrets to whoever issued it. Which markers count is the
caller's to say (`config.format.substitutions()`, from the client table): this layer knows no client. Control
characters (CR/LF) would split the client's request. Every check answers why, never echoing the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# RFC 6749 §A.12 lets an access token be any visible ASCII (VSCHAR); a space would end it in a header.
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# RFC 9110 §5.6.2 `token`: a header field name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

# marker -> the clients that substitute it ("Claude Code, Cursor"), as `config.format.substitutions()` gives it.
Markers = Mapping[str, str]


def substitution_problem(value: str, markers: Markers) -> str | None:
    """Which client would read `value` as config syntax; None when none would."""
    for marker, clients in markers.items():
        if marker in value:
            return f"contains {marker!r}, which {clients} would substitute"
    return None


def credential_problem(value: str, markers: Markers) -> str | None:
    """Why an access token or API key cannot be written into a config; None when it can."""
    if not value:
        return "is empty"
    if VISIBLE_ASCII.fullmatch(value) is None:
        return "contains whitespace, control or non-ASCII characters"
    return substitution_problem(value, markers)


def header_value_problem(value: str, markers: Markers) -> str | None:
    """Why a static header value (`--header NAME=VALUE`, spaces allowed) cannot be written; None when it can."""
    if CONTROL_CHARACTER.search(value):
        return "contains control characters (a line break would split the client's request)"
    return substitution_problem(value, markers)


def header_name_problem(name: str) -> str | None:
    if HEADER_NAME.fullmatch(name) is None:
        return "is not a valid header name (letters, digits and !#$%&'*+.^_`|~-)"
    return None
