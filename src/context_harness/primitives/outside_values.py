"""The one gate for values from outside (a token endpoint, `chctl add`, registry.json, an imported file) that
we write into an agent's config.

Each client substitutes parts of its config text before it uses it (opencode `{env:VAR}` and `{file:path}`,
Claude Code `${VAR}`, Gemini CLI `$VAR`): a value holding such a marker is config syntax, not data, and a token
`{env:ANTHROPIC_API_KEY}` would send the user's other secrets to whoever issued it. Which markers count is the
caller's to say (`config.format.substitutions()`, from the client table): this layer knows no client. Control
characters (CR/LF) would split the client's request. Every check answers why, never echoing the value; a URL
appears in a message as `describe_url` shows it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

# RFC 6749 §A.12 lets an access token be any visible ASCII (VSCHAR); a space would end it in a header.
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# RFC 9110 §5.6.2 `token`: a header field name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# marker -> the clients that substitute it ("Claude Code, Cursor"), as `config.format.substitutions()` gives it.
Markers = Mapping[str, str]


def substitution_problem(value: str, markers: Markers) -> str | None:
    """Which clients would read `value` as config syntax; None when none would."""
    found = [marker for marker in markers if marker in value]
    if not found:
        return None
    clients = ", ".join(dict.fromkeys(markers[marker] for marker in found))
    return f"contains {' and '.join(repr(m) for m in found)}, which {clients} would substitute"


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


def describe_url(url: str) -> str:
    """`host[:port]/path`, how a URL appears in our messages: the query can carry state, codes or challenges."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


# Headers the daemon sets itself on a request to an MCP server, or that frame the request: a static header
# (`--header`, one a registry declares) does not choose them.
RESERVED_HEADERS = frozenset(
    {
        "accept",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "expect",
        "host",
        "keep-alive",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "mcp-protocol-version",
        "mcp-session-id",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    }
)


def static_header_problem(name: str) -> str | None:
    """Why `name` cannot be a static header sent with every request (beside the credential's); None if it can."""
    if name.lower() in RESERVED_HEADERS:
        return "is a header the daemon sets itself"
    return header_name_problem(name)


def is_secure_endpoint(url: str) -> bool:
    """The cleartext rule: a credential travels over TLS, or over plain http to loopback only (OAuth 2.1
    requires TLS for every endpoint; RFC 6750 §5.3)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


USER_INFO_PROBLEM = "holds a user name or password (`user:password@`): a credential goes in a header, never in a URL"


def has_user_info(url: str) -> bool:
    """`user:password@` before the host: a credential aiohttp would send as Basic auth along with ours (or refuse
    to combine with ours), and that would show wherever the URL is shown."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False


def url_problem(url: str, markers: Markers, *, carries_secret: bool) -> str | None:
    """Why `url` cannot be written as a server's URL (or, with `carries_secret`, be sent a credential)."""
    if VISIBLE_ASCII.fullmatch(url) is None:
        return "contains whitespace, control or non-ASCII characters (write a host in its xn-- form)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "is not an http(s) URL with a host"
    if has_user_info(url):
        return USER_INFO_PROBLEM
    substituted = substitution_problem(url, markers)
    if substituted is not None:
        return substituted
    if carries_secret and not is_secure_endpoint(url):
        return "is plain http to a host that is not loopback: the credential would travel in clear text"
    return None
