"""VS Code's MCP config (checked against the VS Code MCP configuration reference, code.visualstudio.com/docs/
copilot/reference/mcp-configuration, VS Code 1.10x; VS Code cannot run in the tests, so its files are checked
against this schema and read back).

`DIR/.vscode/mcp.json` and the user profile's `mcp.json`, `servers` (beside an optional `inputs` array for
prompted values). Remote: `{"type": "http", "url", "headers"}`; stdio: `{"type": "stdio", "command", "args",
"env"}`. `${input:...}` values are prompted once and kept by VS Code, not refreshed: header mode writes the value
itself and bridge is the default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from context_harness.config.format import ConfigFormat, field_problems, xdg_config_home

STDIO_FIELDS: dict[str, Any] = {
    "type": str,
    "command": str,
    "args": list,
    "env": dict,
    "envFile": str,
    "cwd": str,
    "dev": dict,
}
HTTP_FIELDS: dict[str, Any] = {"type": str, "url": str, "headers": dict, "dev": dict}


class VSCodeFormat(ConfigFormat):
    name = "vscode"
    label = "VS Code"
    checked_version = "VS Code MCP configuration reference, 2026-11"
    section = ("servers",)
    executable = "code"
    remote_type = "http"
    stdio_type = "stdio"

    def project_path(self, directory: Path) -> Path:
        return directory / ".vscode" / "mcp.json"

    def global_path(self) -> Path:
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Application Support" / "Code" / "User" / "mcp.json"
        if sys.platform == "win32":
            return Path(os.environ.get("APPDATA", Path.home())) / "Code" / "User" / "mcp.json"
        return xdg_config_home() / "Code" / "User" / "mcp.json"

    def traces(self) -> list[Path]:
        # VS Code keeps its extensions in ~/.vscode and its state beside the user files; chctl writes neither.
        return [Path.home() / ".vscode", self.global_path().parent / "globalStorage"]

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        where = self.where(name)
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind in ("http", "sse"):
            return field_problems(where, entry, {"type": str, "url": str}, HTTP_FIELDS)
        if kind == "stdio" or (isinstance(entry, dict) and kind is None and "command" in entry):
            return field_problems(where, entry, {"command": str}, STDIO_FIELDS)
        if not isinstance(entry, dict):
            return [f"{where}: an entry must be an object"]
        return [f'{where}.type: expected "stdio", "http" or "sse"']


FORMAT = VSCodeFormat()
