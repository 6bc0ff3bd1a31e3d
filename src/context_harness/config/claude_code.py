"""Claude Code's MCP config (checked against Claude Code 2.1.332: its MCP docs and `claude mcp add-json/get`).

Project servers: `DIR/.mcp.json` `mcpServers` (Claude asks once to approve them). User servers: `~/.claude.json`
`mcpServers` (`$CLAUDE_CONFIG_DIR/.claude.json` when set). Claude rewrites `~/.claude.json` itself for its own
state, so we only ever edit our member in it and keep every other key and byte.
Remote: `{"type": "http", "url", "headers"}`; stdio: `{"type": "stdio", "command", "args", "env"}`.
Claude expands `${VAR}` in headers, but only from the environment it was started with: a refreshed token
could never reach a running Claude that way, so header mode writes the value itself. Helper mode writes
`"headersHelper": "/abs/chctl token NAME --json"` instead: a shell command Claude runs at each connect, whose
stdout is a JSON object of headers (for a project's `.mcp.json`, only once the workspace trust dialog was
accepted). Bridge stays the default: `headersHelper` too runs only when Claude connects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from context_harness.config.format import ConfigFormat, field_problems

STDIO_FIELDS: dict[str, Any] = {"type": str, "command": str, "args": list, "env": dict}
HTTP_FIELDS: dict[str, Any] = {"type": str, "url": str, "headers": dict, "headersHelper": str, "oauth": dict}


class ClaudeCodeFormat(ConfigFormat):
    name = "claude-code"
    label = "Claude Code"
    checked_version = "2.1.332"
    executable = "claude"
    remote_type = "http"
    stdio_type = "stdio"
    runs_headers_helper = True

    def project_path(self, directory: Path) -> Path:
        return directory / ".mcp.json"

    def global_path(self) -> Path:
        base = os.environ.get("CLAUDE_CONFIG_DIR")
        return Path(base) / ".claude.json" if base else Path.home() / ".claude.json"

    def traces(self) -> list[Path]:
        base = os.environ.get("CLAUDE_CONFIG_DIR")  # then `.claude.json` is in it too: look for Claude's own files
        return [Path(base) / "projects", Path(base) / "settings.json"] if base else [Path.home() / ".claude"]

    def helper_entry(self, url: str, headers: dict[str, str], command: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": self.remote_type, "url": url}
        if headers:  # the user's static headers; Claude adds the helper's to them
            entry["headers"] = headers
        entry["headersHelper"] = command
        return entry

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        where = self.where(name)
        kind = entry.get("type", "stdio") if isinstance(entry, dict) else None
        if kind in ("http", "sse"):
            return field_problems(where, entry, {"url": str}, HTTP_FIELDS)
        if kind == "stdio":
            return field_problems(where, entry, {"command": str}, STDIO_FIELDS)
        if not isinstance(entry, dict):
            return [f"{where}: an entry must be an object"]
        return [f'{where}.type: expected "stdio", "http" or "sse"']


FORMAT = ClaudeCodeFormat()
