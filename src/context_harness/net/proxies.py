"""Which proxy a request goes through, from the usual variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
`NO_PROXY`), read the way curl and Python's urllib read them: the lower-case spelling wins over the upper-case
one, a scheme's own variable over `ALL_PROXY`, and `NO_PROXY` (host suffixes, `*`) bypasses them all.

Loopback is always reached directly, as Go's `net/http` decides (its proxy-from-environment never proxies
`localhost` or a loopback address): `localhost`, 127.0.0.0/8 and ::1 are implicitly in `NO_PROXY`. A proxy is
another machine, and what we send to this one (plain `http://` with a key, a token, a code) must not go there.

Pure functions over a mapping of variables, so the daemon can take them from its environment and from
`daemon.env`, and the tests can give them directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # public, but not in typeshed

# What aiohttp can speak to a proxy; a SOCKS proxy is refused by name rather than silently ignored.
SUPPORTED_SCHEMES = frozenset({"http", "https"})
VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass(frozen=True, slots=True)
class Proxy:
    """The proxy for one request: its URL (may carry credentials: never print it) and the variable it came from."""

    url: str
    variable: str

    @property
    def where(self) -> str:
        """`host:port` of the proxy, for messages: never the credentials in its URL."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.hostname or '?'}{port}"

    @property
    def supported(self) -> bool:
        return urlsplit(self.url).scheme.lower() in SUPPORTED_SCHEMES


@dataclass(frozen=True, slots=True)
class ProxyVariables:
    """The proxy variables in force: by lower-case name (`https_proxy`, ...), the value and its spelling."""

    values: Mapping[str, tuple[str, str]]

    def for_url(self, url: str) -> Proxy | None:
        """The proxy a request to `url` goes through, or None (direct)."""
        parts = urlsplit(url)
        name = next((n for n in (f"{parts.scheme.lower()}_proxy", "all_proxy") if n in self.values), None)
        if name is None:
            return None
        host = parts.hostname or ""
        if is_loopback(host):
            return None
        no_proxy = self.values.get("no_proxy", ("", ""))[0]
        if no_proxy and proxy_bypass_environment(parts.netloc or host, {"no": no_proxy}):
            return None
        value, spelling = self.values[name]
        return Proxy(_with_scheme(value), spelling)

    def summary(self) -> dict[str, str]:
        """What `chctl doctor` shows: each variable by its spelling, a proxy as `host:port`, NO_PROXY as it is."""
        shown: dict[str, str] = {}
        for name, (value, spelling) in self.values.items():
            shown[spelling] = value if name == "no_proxy" else Proxy(_with_scheme(value), spelling).where
        return shown


def is_loopback(host: str) -> bool:
    """`localhost`, an address in 127.0.0.0/8 or ::1 (an IPv4-mapped one too): this machine, never a proxy's
    business. `host` as `urlsplit` gives it (no brackets, lower case)."""
    host = host.rstrip(".")
    if not host[:1].isdigit() and ":" not in host:  # a name, not an address: spare the parse
        return host == "localhost"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _with_scheme(value: str) -> str:
    """`proxy:3128` means `http://proxy:3128`, as curl reads it."""
    return value if "://" in value else f"http://{value}"


def from_variables(*sources: Mapping[str, str | None]) -> ProxyVariables:
    """The proxy variables from `sources`, the first source that sets one winning (the environment before
    `daemon.env`); within one source the lower-case spelling wins over the upper-case one."""
    values: dict[str, tuple[str, str]] = {}
    for source in reversed(sources):
        for upper in VARIABLES:
            for spelling in (upper, upper.lower()):  # lower case last: it wins
                value = source.get(spelling)
                if value is not None and value.strip():
                    values[upper.lower()] = (value.strip(), spelling)
    return ProxyVariables(values)


def read_env_file(path: Path) -> dict[str, str | None]:
    """The `KEY=value` lines of `daemon.env` (the daemon's own file; absent is empty)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own reader of the same file

    return dict(dotenv_values(path))
