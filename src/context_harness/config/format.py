"""The config-writer interface: one `ConfigFormat` per agent client, chosen by name from `CLIENTS`.

A format knows where its client's files are, what an entry for a remote, local or bridged server looks like,
where a header sits in it, how (if at all) the client refers to a secret kept outside the file, how to check an
entry against the client's schema, and how to mask one for printing. Everything else (reading, the surgical
edit, the atomic write, bindings, refreshes) is shared and knows no client: see services/config_service.py.
Each client module is imported only when it is used (as uvicorn picks its loop and protocol modules).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from context_harness.config import jsonc, toml_edit
from context_harness.primitives.mcp import Mode


class Syntax(Protocol):
    """How a file kind is parsed and edited member by member, keeping every other byte."""

    name: str

    def parse(self, text: str) -> Any: ...

    def set(self, text: str, path: Sequence[str], value: Any) -> str: ...

    def remove(self, text: str, path: Sequence[str]) -> str: ...


class _Jsonc:
    name = "jsonc"

    def parse(self, text: str) -> Any:
        return jsonc.parse_jsonc(text)

    def set(self, text: str, path: Sequence[str], value: Any) -> str:
        return jsonc.set_member(text, path, value)

    def remove(self, text: str, path: Sequence[str]) -> str:
        return jsonc.remove_member(text, path)


class _Toml:
    name = "toml"

    def parse(self, text: str) -> Any:
        return toml_edit.parse_toml(text)

    def set(self, text: str, path: Sequence[str], value: Any) -> str:
        return toml_edit.set_member(text, path, value)

    def remove(self, text: str, path: Sequence[str]) -> str:
        return toml_edit.remove_member(text, path)


JSONC: Syntax = _Jsonc()
TOML: Syntax = _Toml()


class ConfigFormat:
    """One client's config format. Subclasses set the class attributes and override what differs."""

    name: str  # the `--client` value
    label: str  # for messages: "Claude Code"
    checked_version: str  # the client version whose docs and source the module was checked against
    syntax: Syntax = JSONC
    section: tuple[str, ...] = ("mcpServers",)  # where the servers are, from the document's root
    executable: str  # looked for on PATH by `chctl clients`
    # header: the file carries the header, rewritten on every refresh; bridge: the entry runs `chctl bridge`.
    # Bridge where a running client never re-reads its headers.
    default_mode: Mode = "bridge"
    new_file_text = "{}\n"
    new_file_mode = 0o600  # a new file may soon hold a header: only its owner reads it
    # The shape of the entries we write: `{"type": remote_type, url_key: URL, headers_key: {...}}` and
    # `{"type": stdio_type, "command": argv[0], "args": argv[1:], "env": {...}}`, without a type when None.
    remote_type: str | None = None
    url_key = "url"
    headers_key = "headers"
    stdio_type: str | None = None
    runs_headers_helper = False  # the client can run a command for its headers (Claude Code): `--mode helper`

    # --- where the files are -----------------------------------------------------------------------------

    def project_path(self, directory: Path) -> Path:
        raise NotImplementedError

    def global_path(self) -> Path:
        raise NotImplementedError

    def default_path(self, cwd: Path) -> Path | None:
        """Neither --project nor --global: the user-level file (an agent's own servers follow the user)."""
        return self.global_path()

    def no_default_path(self, cwd: Path) -> str:
        """Why `default_path` found nothing (for formats whose default is looked for)."""
        return f"no {self.label} config for {cwd}"

    def may_create(self) -> bool:
        """Whether `chctl add` creates a missing file, a project's included (opencode's: `chctl init` first)."""
        return True

    def found(self) -> str | None:
        """Why we think the client is on this machine: its executable on PATH, or a file or directory it makes
        itself (`traces`), else None. Never its user config: `chctl add --client` creates that one."""
        where = shutil.which(self.executable)
        if where:
            return where
        return next((str(path) for path in self.traces() if path.exists()), None)

    def traces(self) -> list[Path]:
        """What the client leaves on a machine where it ran, and chctl never writes."""
        return []

    # --- entries -----------------------------------------------------------------------------------------

    def entries(self, document: Any) -> dict[str, Any]:
        """The servers of a parsed file ({} when the section is absent)."""
        node = document
        for key in self.section:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def shape_problem(self, document: Any) -> str | None:
        """Why a parsed file cannot hold servers: its root, or a member on the way to them, is not an object."""
        if not isinstance(document, dict):
            return "the document's root is not an object"
        node: dict[str, Any] = document
        for depth, key in enumerate(self.section):
            if key not in node:
                return None
            if not isinstance(node[key], dict):
                return f"`{'.'.join(self.section[: depth + 1])}` is not an object"
            node = node[key]
        return None

    def shape_example(self) -> str:
        """What the file must look like around the servers, for the hint after `shape_problem`."""
        if self.syntax is TOML:
            return f"[{'.'.join(self.section)}.NAME] tables"
        return "".join('{"' + key + '": ' for key in self.section) + "{...}" + "}" * len(self.section)

    def entry_path(self, name: str) -> tuple[str, ...]:
        return (*self.section, name)

    def header_path(self, name: str, header: str) -> tuple[str, ...]:
        return (*self.section, name, self.headers_key, header)

    def remote_entry(self, url: str, headers: dict[str, str], managed: bool) -> dict[str, Any]:
        """An HTTP server; `managed`: we keep its auth header, so the client must not start its own OAuth."""
        entry: dict[str, Any] = {"type": self.remote_type} if self.remote_type else {}
        entry[self.url_key] = url
        if headers:
            entry[self.headers_key] = headers
        return entry

    def local_entry(self, command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": self.stdio_type} if self.stdio_type else {}
        entry.update(command=command[0], args=command[1:])
        if environment:
            entry["env"] = environment
        return entry

    def bridge_entry(self, command: list[str]) -> dict[str, Any]:
        return self.local_entry(command, {})

    def helper_entry(self, url: str, headers: dict[str, str], command: str) -> dict[str, Any]:
        """An HTTP entry whose client runs the shell `command` at each connect for its headers; only for a
        client with `runs_headers_helper` (for the others `--mode helper` is refused before any write)."""
        raise NotImplementedError

    def entry_url(self, entry: dict[str, Any]) -> str | None:
        url = entry.get(self.url_key)
        return url if isinstance(url, str) else None

    def entry_headers(self, entry: dict[str, Any]) -> dict[str, Any]:
        headers = entry.get(self.headers_key)
        return headers if isinstance(headers, dict) else {}

    def entry_command(self, entry: dict[str, Any]) -> list[str]:
        command, args = entry.get("command"), entry.get("args")
        parts = [command] if isinstance(command, str) else []
        return parts + [str(a) for a in args] if isinstance(args, list) else parts

    def entry_environment(self, entry: dict[str, Any]) -> dict[str, str]:
        """The variables a local entry starts its server with."""
        return _string_map(entry.get("env"))

    def set_header(self, text: str, name: str, header: str, value: str) -> str:
        return self.syntax.set(text, self.header_path(name, header), value)

    def declines_own_oauth(self, entry: dict[str, Any]) -> bool:
        """Whether the entry tells the client to leave its auth to us (opencode's `"oauth": false`)."""
        return False

    def remove_header(self, text: str, name: str, header: str) -> str:
        """The entry without our header, and without a headers object that only held it."""
        text = self.syntax.remove(text, self.header_path(name, header))
        entry = self.entries(self.syntax.parse(text)).get(name)
        if isinstance(entry, dict) and entry.get(self.headers_key) == {}:
            text = self.syntax.remove(text, self.header_path(name, header)[:-1])
        return text

    # --- secrets -----------------------------------------------------------------------------------------

    def secret_file_reference(self, path: Path) -> str | None:
        """How the client reads a header's secret from a file, or None when it cannot (then: inline or bridge).

        Environment-variable references (`${VAR}`, `${env:VAR}`) are not offered: the daemon cannot put a
        fresh token into the environment of an agent that is already running."""
        return None

    def is_reference(self, value: str) -> bool:
        """A header value that names where the secret is rather than holding it (safe to print)."""
        return "${" in value

    # What the client substitutes in a value it reads from the file: a token or key holding one would be read
    # as config syntax (and could send the user's environment to whoever issued it). `substitutions()` joins
    # every client's, and primitives/outside_values.py refuses them all.
    substitutions: tuple[str, ...] = ("${",)

    def mask(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry fit to print: header values hidden unless they are references."""
        headers = entry.get(self.headers_key)
        if not isinstance(headers, dict):
            return entry
        shown = {k: v if isinstance(v, str) and self.is_reference(v) else "***" for k, v in headers.items()}
        return {**entry, self.headers_key: shown}

    # --- schema ------------------------------------------------------------------------------------------

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        """Why the client would reject (or silently ignore part of) this entry; [] when it fits."""
        raise NotImplementedError

    def where(self, name: str) -> str:
        """`mcp.NAME` / `mcpServers.NAME`: how messages name an entry."""
        return ".".join(self.entry_path(name))


# --- schema helpers shared by the JSON-shaped formats ------------------------------------------------------

FieldType = type | tuple[type, ...]


def field_problems(where: str, entry: Any, required: dict[str, FieldType], optional: dict[str, FieldType]) -> list[str]:
    """Missing or mistyped fields. Unknown keys pass: each client adds new ones faster than we can list them."""
    if not isinstance(entry, dict):
        return [f"{where}: an entry must be an object"]
    problems = [f"{where}.{key}: required" for key in required if key not in entry]
    for key, value in entry.items():
        expected = required.get(key) or optional.get(key)
        if expected is None:
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
            problems.append(f"{where}.{key}: expected {_type_names(expected)}")
        elif isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
            problems.append(f"{where}.{key}: every value must be a string")
        elif isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(f"{where}.{key}: every item must be a string")
    return problems


def _as_tuple(expected: FieldType) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _type_names(expected: FieldType) -> str:
    names = {str: "a string", list: "an array of strings", dict: "an object of strings", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(expected))


# --- paths shared by several clients -------------------------------------------------------------------------


def xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


# --- the table -----------------------------------------------------------------------------------------------

# `--client` value -> module holding `FORMAT`. opencode first: it is the default.
CLIENTS: dict[str, str] = {
    "opencode": "context_harness.config.opencode",
    "claude-code": "context_harness.config.claude_code",
    "codex": "context_harness.config.codex",
    "gemini": "context_harness.config.gemini",
    "cursor": "context_harness.config.cursor",
    "vscode": "context_harness.config.vscode",
}
DEFAULT_CLIENT = "opencode"


def get_format(client: str) -> ConfigFormat:
    """The format for `client`; KeyError for a name not in CLIENTS."""
    module = importlib.import_module(CLIENTS[client])
    fmt: ConfigFormat = module.FORMAT
    return fmt


@functools.cache
def substitutions() -> dict[str, str]:
    """Every marker any client in the table substitutes -> the clients that do ("Claude Code, Cursor"): what
    no value from outside may hold, whichever client it is written for today (it may be re-added to another)."""
    found: dict[str, list[str]] = {}
    for client in CLIENTS:
        fmt = get_format(client)
        for marker in fmt.substitutions:
            found.setdefault(marker, []).append(fmt.label)
    return {marker: ", ".join(labels) for marker, labels in found.items()}


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
