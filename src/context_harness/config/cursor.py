"""Cursor's MCP config (checked against Cursor's MCP docs, cursor.com/docs/mcp, as of Cursor 2.x; Cursor cannot
run in the tests, so its files are checked against this schema and read back).

`~/.cursor/mcp.json` and `DIR/.cursor/mcp.json`, `mcpServers`. Remote: `{"url", "headers"}`;
stdio: `{"command", "args", "env"}`. `${env:VAR}` is read from Cursor's environment at start-up only, so
header mode writes the value itself and bridge is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from context_harness.config.format import ConfigFormat, field_problems

FIELDS: dict[str, Any] = {
    "type": str,
    "command": str,
    "args": list,
    "env": dict,
    "envFile": str,
    "url": str,
    "headers": dict,
    "auth": dict,
}


class CursorFormat(ConfigFormat):
    name = "cursor"
    label = "Cursor"
    checked_version = "Cursor docs (cursor.com/docs/mcp), 2026-11"
    executable = "cursor"

    def project_path(self, directory: Path) -> Path:
        return directory / ".cursor" / "mcp.json"

    def global_path(self) -> Path:
        return Path.home() / ".cursor" / "mcp.json"

    def traces(self) -> list[Path]:
        return [Path.home() / ".cursor" / "extensions", Path("/Applications/Cursor.app")]

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        where = self.where(name)
        problems = field_problems(where, entry, {}, FIELDS)
        if isinstance(entry, dict) and ("command" in entry) == ("url" in entry):
            problems.append(f"{where}: needs exactly one of command and url")
        return problems


FORMAT = CursorFormat()
