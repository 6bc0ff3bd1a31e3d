"""What the service must carry from this shell: a systemd user service or a launchd agent does not inherit the
shell's environment, so the proxy variables and `CH_CA_BUNDLE` present at `chctl service install` go into the
daemon's own `daemon.env`, which the daemon reads at start and on every reload. Not into the unit: a unit file is
world-readable, and a proxy URL may carry a password (daemon.env is the user's alone, mode 0600).
Standard library only: chctl imports this.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

CARRIED = (
    *(f"{name}_PROXY" for name in ("HTTPS", "HTTP", "ALL", "NO")),
    *(f"{name}_proxy" for name in ("https", "http", "all", "no")),
    "CH_CA_BUNDLE",
)
ENV_FILE_MODE = 0o600  # a proxy URL may carry a password
_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*):[^\s\"']*@")
# A line break in a value would end its line in daemon.env, and what follows would be read as a setting of its own.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def carried_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy and CA variables set in `environ`; a relative CH_CA_BUNDLE made absolute (the service's
    working directory is not this one)."""
    found = {name: environ[name].strip() for name in CARRIED if environ.get(name, "").strip()}
    if "CH_CA_BUNDLE" in found:
        found["CH_CA_BUNDLE"] = os.path.abspath(os.path.expanduser(found["CH_CA_BUNDLE"]))
    return found


def daemon_env_file(home: Path) -> Path:
    """The service's daemon.env: its CH_HOME is the default one."""
    return home / ".context-harness" / "daemon.env"


def updated_env_file(existing: str, values: Mapping[str, str]) -> str:
    """`existing` with each of `values` set: a line for the same name replaced, the others kept, new ones appended."""
    lines, written = [], set()
    for line in existing.splitlines():
        match = _KEY.match(line)
        if match and match.group(1) in values:
            if match.group(1) not in written:
                lines.append(_assignment(match.group(1), values[match.group(1)]))
                written.add(match.group(1))
            continue
        lines.append(line)
    lines += [_assignment(name, value) for name, value in values.items() if name not in written]
    return "\n".join(lines) + "\n"


def control_character_in(values: Mapping[str, str]) -> str | None:
    """The first variable whose value holds a control character (it cannot be written as one line); None."""
    return next((name for name, value in values.items() if _CONTROL.search(value)), None)


def masked(text: str) -> str:
    """`text` (daemon.env's lines) with every password replaced by `***`: what a dry run may print. A proxy
    variable's value is read as the URL the daemon reads (`masked_url`); any other line loses the password of
    a `scheme://user:password@` it holds."""
    lines = []
    for line in text.splitlines():
        match = _KEY.match(line)
        if match and match.group(1).lower().endswith("_proxy"):
            value = _unquoted(match.group(2))
            shown = masked_url(value)
            lines.append(line if shown == value else _assignment(match.group(1), shown))
        else:
            lines.append(_URL_PASSWORD.sub(r"\1:***@", line))
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def masked_url(url: str) -> str:
    """`url` with the password of its user info as `***`. The user info runs to the last `@` (a raw `@` in a
    password stays part of it, as urlsplit and yarl read it), and a scheme-less `user:pw@proxy:3128` is a URL
    too (curl and the daemon read it as http://)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    user_info, at, host = rest.rpartition("@")
    user, colon, _password = user_info.partition(":")
    if not at or not colon:
        return url
    return f"{scheme}{separator}{user}:***@{host}"


def _unquoted(value: str) -> str:
    """A value as `_assignment` writes it (double quotes, backslash escapes), or as a person wrote it."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return re.sub(r"\\(.)", r"\1", inner) if value[0] == '"' else inner
    return value


def _assignment(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def shell_network(environ: Mapping[str, str]) -> dict[str, str]:
    """What `chctl doctor` tells the daemon about this shell: each proxy variable as `host:port` (never its
    credentials), NO_PROXY and CH_CA_BUNDLE as they are."""
    shown = carried_variables(environ)
    for name, value in shown.items():
        if name.lower().endswith("_proxy") and name.lower() != "no_proxy":
            parts = urlsplit(value if "://" in value else f"http://{value}")
            try:
                port = f":{parts.port}" if parts.port else ""
            except ValueError:  # a port that is not a number: the host alone says enough
                port = ""
            shown[name] = f"{parts.hostname or '?'}{port}"
    return shown
