"""Codex CLI's MCP config (checked against Codex 0.171.0: codex-rs/config mcp_types.rs, docs/config.md).

`~/.codex/config.toml` (`$CODEX_HOME/config.toml` when set) and a trusted project's `DIR/.codex/config.toml`,
`[mcp_servers.NAME]`. Remote: `url` + `http_headers` (literal headers; `bearer_token_env_var` and
`env_http_headers` name variables read once at start-up, which a refreshed token can never reach); stdio:
`command`, `args`, `env`. Codex ignores unknown keys silently (checked: `codex mcp get --json` drops them),
so doctor names the one people get wrong, `headers`. Edited with tomlkit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from context_harness.config.format import TOML, ConfigFormat, field_problems

BRIDGE_ENV_VARS = ("CH_HOME", "CH_SOCKET", "XDG_RUNTIME_DIR")
STDIO_FIELDS: dict[str, Any] = {"command": str, "args": list, "env": dict, "env_vars": list, "cwd": str}
HTTP_FIELDS: dict[str, Any] = {
    "url": str,
    "bearer_token_env_var": str,
    "http_headers": dict,
    "env_http_headers": dict,
    "oauth": dict,
    "oauth_resource": str,
    "scopes": list,
}
COMMON_FIELDS: dict[str, Any] = {
    "enabled": bool,
    "required": bool,
    "startup_timeout_sec": (int, float),
    "startup_timeout_ms": int,
    "tool_timeout_sec": (int, float),
    "enabled_tools": list,
    "disabled_tools": list,
    "tools": dict,
    "default_tools_approval_mode": str,
}


class CodexFormat(ConfigFormat):
    name = "codex"
    label = "Codex"
    checked_version = "0.171.0"
    syntax = TOML
    section = ("mcp_servers",)
    substitutions = ()
    executable = "codex"
    new_file_text = ""
    headers_key = "http_headers"

    def project_path(self, directory: Path) -> Path:
        return directory / ".codex" / "config.toml"

    def global_path(self) -> Path:
        base = os.environ.get("CODEX_HOME")
        return (Path(base) if base else Path.home() / ".codex") / "config.toml"

    def traces(self) -> list[Path]:
        home = self.global_path().parent  # beside config.toml, which chctl may have written: Codex's own files
        return [home / "auth.json", home / "sessions", home / "log"]

    def bridge_entry(self, command: list[str]) -> dict[str, Any]:
        """Codex starts stdio servers with a short list of environment variables (HOME, PATH, ...): forward the
        ones `chctl bridge` finds the daemon's socket by (checked: without them it looks in the wrong place)."""
        return {**self.local_entry(command, {}), "env_vars": list(BRIDGE_ENV_VARS)}

    def schema_problems(self, name: str, entry: Any) -> list[str]:
        where = self.where(name)
        if not isinstance(entry, dict):
            return [f"{where}: an entry must be a table"]
        if "command" in entry and "url" in entry:
            return [f"{where}: has both command and url (Codex refuses it)"]
        ignored = [f"{where}.headers: Codex ignores it (literal headers go in http_headers)"] * ("headers" in entry)
        if "url" in entry:
            return ignored + field_problems(where, entry, {"url": str}, {**HTTP_FIELDS, **COMMON_FIELDS})
        if "command" in entry:
            return ignored + field_problems(where, entry, {"command": str}, {**STDIO_FIELDS, **COMMON_FIELDS})
        return [f"{where}: needs a command or a url"]


FORMAT = CodexFormat()
