"""`chctl doctor`: checks a person would otherwise do by hand, each with a plain verdict."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from context_harness.config import opencode
from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.result import Failure
from context_harness.services.config_service import ConfigService
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore

GIT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Literal["ok", "warn", "error"]
    message: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mode_check(name: str, path: Path, expected: int) -> Check | None:
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & ~expected:
        return Check(name, "error", f"{path} is {mode:o}, should be {expected:o}", f"chmod {expected:o} {path}")
    return Check(name, "ok", f"{path} is {mode:o}")


def permission_checks(home: Path, tokens: TokenStore) -> list[Check]:
    checks = [_mode_check("state_dir_mode", home, 0o700), _mode_check("tokens_dir_mode", tokens.tokens_dir, 0o700),
              _mode_check("secrets_dir_mode", tokens.secrets_dir, 0o700)]
    for directory in (tokens.tokens_dir, tokens.secrets_dir):
        if directory.is_dir():
            checks += [_mode_check("secret_file_mode", p, 0o600) for p in sorted(directory.iterdir()) if p.is_file()]
    return [c for c in checks if c is not None]


def is_tracked_by_git(path: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", "-C", str(path.parent), "ls-files", "--error-unmatch", path.name],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def config_checks(config: ConfigService, bindings: BindingStore, tokens: TokenStore, extra: list[Path]) -> list[Check]:
    checks: list[Check] = []
    by_path: dict[str, list[tuple[str, SecretMode]]] = {}
    for name, items in bindings.load().items():
        for binding in items:
            by_path.setdefault(binding.path, []).append((name, binding.secret_mode))
    for path in extra:
        by_path.setdefault(str(path.resolve()), [])
    for path_str, servers in sorted(by_path.items()):
        path = Path(path_str)
        entries = config.entries(path)
        if isinstance(entries, Failure):
            checks.append(Check("config_parses", "error", entries.error, entries.hint))
            continue
        checks.append(Check("config_parses", "ok", f"{path} parses"))
        for name, entry in sorted(entries.value.items()):
            problems = opencode.schema_problems(name, entry)
            if problems:
                checks.append(Check("entry_schema", "error", "; ".join(problems), f"run `chctl add {name}` again"))
        for name, _mode in servers:
            if name not in entries.value:
                checks.append(Check("entry_present", "warn", f"{path} no longer has mcp.{name}",
                                    f"run `chctl add {name}` to restore it"))
        inline = [name for name, mode in servers if mode is SecretMode.INLINE and _has_secret(tokens, name)]
        if inline and is_tracked_by_git(path):
            checks.append(Check(
                "inline_secret_in_git", "warn",
                f"{path} is tracked by git and holds inline secrets for: {', '.join(sorted(inline))}",
                "re-add them with `--secret-mode file` (or use --global) so no secret gets committed",
            ))
    return checks


def _has_secret(tokens: TokenStore, name: str) -> bool:
    credential = tokens.load(name)
    return credential is not None and bool(credential.secret)
