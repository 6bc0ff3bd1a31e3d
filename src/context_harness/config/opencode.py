"""opencode's config format (checked against opencode 1.18.33): where its files are and what an `mcp` entry
looks like. The only module that knows opencode; `FORMAT` is its `ConfigFormat` (see config/format.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from context_harness.config.format import ConfigFormat
from context_harness.primitives.mcp import MCPServerConfig, ServerType

SCHEMA_URL = "https://opencode.ai/config.json"
# Innermost wins in opencode; within one directory we prefer .jsonc as the file people annotate.
CONFIG_FILE_NAMES = ("opencode.jsonc", "opencode.json")
# Files we create: `$schema` present, or opencode rewrites the file itself.
NEW_CONFIG_TEXT = '{\n  "$schema": "' + SCHEMA_URL + '",\n  "mcp": {}\n}\n'
NEW_CONFIG_MODE = 0o644


def existing_config_in(directory: Path) -> Path | None:
    for file_name in CONFIG_FILE_NAMES:
        candidate = directory / file_name
        if candidate.is_file():
            return candidate
    return None


def project_config_path(directory: Path) -> Path:
    """DIR's opencode.jsonc or opencode.json; a new file is opencode.json."""
    return existing_config_in(directory) or directory / "opencode.json"


def global_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "opencode"


def global_config_path() -> Path:
    return project_config_path(global_config_dir())


def find_nearest_config(cwd: Path) -> Path | None:
    """The innermost opencode.json[c] walking up from `cwd`, stopping at the git root (as opencode does)."""
    directory = cwd.resolve()
    while True:
        found = existing_config_in(directory)
        if found is not None:
            return found
        if (directory / ".git").exists() or directory.parent == directory:
            return None
        directory = directory.parent


def schema_problems(name: str, entry: Any) -> list[str]:
    """Why opencode 1.18 would reject (or silently ignore part of) this entry; [] when it fits."""
    try:
        config = MCPServerConfig.model_validate(entry)
    except ValidationError as exc:
        return [
            f"mcp.{name}.{'.'.join(str(p) for p in err['loc'])}: {_plain(err['msg'], err['type'])}"
            for err in exc.errors(include_input=False)
        ]
    if config.type == "remote" and not config.url:
        return [f"mcp.{name}: a remote server needs a url"]
    if config.type == "local" and not config.command:
        return [f"mcp.{name}: a local server needs a command array"]
    return []


def _plain(message: str, kind: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key (opencode ignores it; local servers use `command` and `environment`)"
    return message


class OpencodeFormat(ConfigFormat):
    name = "opencode"
    label = "opencode"
    checked_version = "1.18.33"
    section = ("mcp",)
    substitutions = ("{env:", "{file:")
    executable = "opencode"
    # opencode re-reads nothing while it runs either, but a header entry is what people had before the bridge:
    # it stays the default (`--bridge` for long sessions).
    default_mode = "header"
    new_file_text = NEW_CONFIG_TEXT
    new_file_mode = NEW_CONFIG_MODE

    def project_path(self, directory: Path) -> Path:
        return project_config_path(directory)

    def global_path(self) -> Path:
        return global_config_path()

    def traces(self) -> list[Path]:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return [Path(data) / "opencode"]  # its sessions and logins: opencode writes them, chctl never does

    def default_path(self, cwd: Path) -> Path | None:
        return find_nearest_config(cwd)

    def no_default_path(self, cwd: Path) -> str:
        return f"no opencode.json or opencode.jsonc in {cwd} or its parents up to the git root"

    def may_create(self) -> bool:
        return False  # a project's opencode.json is `chctl init`'s (the user-level one: see `creates_missing`)

    def remote_entry(self, url: str, headers: dict[str, str], managed: bool) -> dict[str, Any]:
        entry = MCPServerConfig(type=ServerType.REMOTE, url=url, headers=headers or None).to_opencode()
        if managed:
            entry["oauth"] = False  # we manage this header: opencode must not start its own flow on a 401
        return entry

    def local_entry(self, command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        return MCPServerConfig(type=ServerType.LOCAL, command=command, environment=environment or None).to_opencode()

    def entry_command(self, entry: dict[str, Any]) -> list[str]:
        command = entry.get("command")
        return [str(c) for c in command] if isinstance(command, list) else []

    def entry_environment(self, entry: dict[str, Any]) -> dict[str, str]:
        environment = entry.get("environment")
        return {str(k): str(v) for k, v in environment.items()} if isinstance(environment, dict) else {}

    def set_header(self, text: str, name: str, header: str, value: str) -> str:
        """The header, plus `"oauth": false` so opencode does not start its own flow."""
        entry = self.entries(self.syntax.parse(text)).get(name)
        text = self.syntax.set(text, self.header_path(name, header), value)
        if isinstance(entry, dict) and entry.get("oauth") is not False:
            text = self.syntax.set(text, (*self.entry_path(name), "oauth"), False)
        return text

    def declines_own_oauth(self, entry: dict[str, Any]) -> bool:
        return entry.get("oauth") is False

    def secret_file_reference(self, path: Path) -> str | None:
        """opencode substitutes `{file:PATH}`; `~/` keeps configs portable across users."""
        try:
            return "{file:~/" + str(path.relative_to(Path.home())) + "}"
        except ValueError:
            return "{file:" + str(path) + "}"

    def is_reference(self, value: str) -> bool:
        return "{file:" in value or "{env:" in value

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        return schema_problems(name, entry)


FORMAT = OpencodeFormat()
