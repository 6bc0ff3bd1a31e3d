"""opencode's config format (1.18): where its files are and what an `mcp` entry looks like.

Everything opencode-specific lives here, so another agent's format (Claude Code's `.mcp.json`, Cursor, VS Code)
can be a sibling module with the same few functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from context_harness.primitives.mcp import MCPServerConfig

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


def entry_path(name: str) -> tuple[str, ...]:
    return ("mcp", name)


def header_path(name: str, header: str) -> tuple[str, ...]:
    return ("mcp", name, "headers", header)


def oauth_path(name: str) -> tuple[str, ...]:
    return ("mcp", name, "oauth")


def mcp_entries(document: Any) -> dict[str, Any]:
    """The `mcp` object of a parsed config ({} when absent)."""
    if not isinstance(document, dict):
        return {}
    section = document.get("mcp")
    return section if isinstance(section, dict) else {}


def shape_problem(document: Any) -> str | None:
    """Why a parsed config cannot hold MCP servers: its root, or its `mcp`, is not an object."""
    if not isinstance(document, dict):
        return "the document's root is not an object"
    if "mcp" in document and not isinstance(document["mcp"], dict):
        return "`mcp` is not an object"
    return None


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
