"""Service-manager unit templates (systemd user units, launchd agent) and their rendering.

The files here are the packaged copies, loaded with importlib.resources so an installed wheel has
them; systemd/ and launchd/ at the top of the repository hold the same text for people to read
(a test keeps them equal). Placeholders are `@NAME@`; rendering escapes each value for its format.
Standard library only: `chctl service` imports this.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

SYSTEMD_SOCKET = "context-harness.socket"
SYSTEMD_SERVICE = "context-harness.service"
LAUNCHD_LABEL = "ai.context-harness.daemon"
LAUNCHD_PLIST = f"{LAUNCHD_LABEL}.plist"

_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def template(name: str) -> str:
    """The raw text of one packaged template, placeholders included."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def render_systemd_socket() -> str:
    return template(SYSTEMD_SOCKET)


def render_systemd_service(daemon: Path) -> str:
    return _render(template(SYSTEMD_SERVICE), {"CONTEXT_HARNESSD": systemd_quote_executable(str(daemon))})


def render_launchd_plist(daemon: Path, home: Path, tmpdir: str) -> str:
    """`tmpdir` is the per-user $TMPDIR; a trailing slash is added when missing."""
    tmp = tmpdir if tmpdir.endswith("/") else tmpdir + "/"
    values = {"CONTEXT_HARNESSD": str(daemon), "HOME": str(home).rstrip("/"), "TMPDIR": tmp}
    return _render(template(LAUNCHD_PLIST), {k: xml_escape(v) for k, v in values.items()})


def systemd_quote_executable(path: str) -> str:
    """The program word of ExecStart=: double-quoted, `%` escaped as a specifier would be.

    `$` stays as it is: systemd expands variables in the arguments, not in the program path
    (checked with `systemd-analyze verify` in the tests).
    """
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _render(text: str, values: dict[str, str]) -> str:
    rendered = _PLACEHOLDER.sub(lambda m: values.get(m.group(0).strip("@"), m.group(0)), text)
    left = _PLACEHOLDER.findall(rendered)
    if left:
        raise ValueError(f"template placeholders without a value: {sorted(set(left))}")
    return rendered
