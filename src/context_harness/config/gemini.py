"""Gemini CLI's MCP config (checked against Gemini CLI 0.61.0: docs/tools/mcp-server.md and its settings schema).

`~/.gemini/settings.json` and `DIR/.gemini/settings.json`, `mcpServers` (project servers load only in a
trusted folder). Remote: `{"httpUrl", "headers"}` (Streamable HTTP; `url` is the legacy SSE transport);
stdio: `{"command", "args", "env"}`. Gemini expands `$VAR`/`${VAR}` from its own environment at start-up only,
so header mode writes the value itself and bridge is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from context_harness.config.format import ConfigFormat, field_problems

FIELDS: dict[str, Any] = {
    "command": str,
    "args": list,
    "env": dict,
    "cwd": str,
    "url": str,
    "httpUrl": str,
    "headers": dict,
    "type": str,
    "timeout": int,
    "trust": bool,
    "description": str,
    "includeTools": list,
    "excludeTools": list,
    "oauth": dict,
    "authProviderType": str,
}


class GeminiFormat(ConfigFormat):
    name = "gemini"
    label = "Gemini CLI"
    checked_version = "0.61.0"
    substitutions = ("$",)
    executable = "gemini"
    url_key = "httpUrl"

    def project_path(self, directory: Path) -> Path:
        return directory / ".gemini" / "settings.json"

    def global_path(self) -> Path:
        return Path.home() / ".gemini" / "settings.json"

    def traces(self) -> list[Path]:
        home = Path.home() / ".gemini"
        return [home / "installation_id", home / "oauth_creds.json", home / "google_accounts.json", home / "tmp"]

    def entry_url(self, entry: dict[str, Any]) -> str | None:
        url = entry.get("httpUrl") or entry.get("url")
        return url if isinstance(url, str) else None

    def is_reference(self, value: str) -> bool:
        return "$" in value

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        where = self.where(name)
        problems = field_problems(where, entry, {}, FIELDS)
        if isinstance(entry, dict) and not any(k in entry for k in ("command", "url", "httpUrl")):
            problems.append(f"{where}: needs a command, an httpUrl or a url")
        return problems


FORMAT = GeminiFormat()
