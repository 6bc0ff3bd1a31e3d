"""The `Bearer` challenge in a WWW-Authenticate header (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1): where
a 401 says the server's protected-resource metadata is, and which scope it wants. Pure; discovery uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BearerChallenge:
    """The parameters of a `Bearer` challenge that discovery uses."""

    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# token68 (RFC 9110 §11.2) only counts when it runs to the end of the challenge.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=\s*(?:,|$))")


def parse_www_authenticate(value: str | None) -> BearerChallenge | None:
    """The Bearer challenge in a WWW-Authenticate value, or None when there is none.

    Handles several schemes in one header (`Basic realm="x", Bearer ...`), quoted strings with
    escapes and commas inside, unquoted values, token68 credentials and stray whitespace.
    """
    if not value:
        return None
    schemes: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    pos, end = 0, len(value)
    while pos < end:
        while pos < end and value[pos] in " \t,":
            pos += 1
        match = _TOKEN.match(value, pos)
        if match is None:
            pos += 1  # garbage: skip a character and resynchronise
            continue
        name, pos = match.group(0), match.end()
        after = pos
        while after < end and value[after] in " \t":
            after += 1
        if after < end and value[after] == "=":
            param_value, pos = _read_param_value(value, after + 1)
            if current is not None:
                current.setdefault(name.lower(), param_value)
            continue
        current = schemes.setdefault(name.lower(), {})
        pos = after
        token68 = _TOKEN68.match(value, pos)
        if token68 is not None:
            pos = token68.end()
    bearer = schemes.get("bearer")
    if bearer is None:
        return None
    return BearerChallenge(
        resource_metadata=bearer.get("resource_metadata") or None,
        scope=bearer.get("scope") or None,
        error=bearer.get("error") or None,
    )


def _read_param_value(value: str, pos: int) -> tuple[str, int]:
    end = len(value)
    while pos < end and value[pos] in " \t":
        pos += 1
    if pos < end and value[pos] == '"':
        out: list[str] = []
        pos += 1
        while pos < end and value[pos] != '"':
            if value[pos] == "\\" and pos + 1 < end:
                pos += 1
            out.append(value[pos])
            pos += 1
        return "".join(out), pos + 1
    start = pos
    while pos < end and value[pos] not in " \t,":
        pos += 1
    return value[start:pos], pos
