"""Credentials on disk: `tokens/<name>.json` (0600, atomic) and the `{file:}` secret files opencode reads."""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from pydantic import ValidationError

from context_harness.primitives.names import valid_server_name
from context_harness.primitives.oauth import Credential
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)


class TokenStore:
    def __init__(self, tokens_dir: Path, secrets_dir: Path) -> None:
        self.tokens_dir = tokens_dir
        self.secrets_dir = secrets_dir

    def path(self, name: str) -> Path:
        """The token file of `name` (ValueError for a name that is not one)."""
        if not valid_server_name(name):
            raise ValueError(f"invalid server name: {name!r}")
        return self.tokens_dir / f"{name}.json"

    def load(self, name: str) -> Credential | None:
        path = self.path(name)
        try:
            return Credential.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError) as exc:
            # Atomic writes make this unlikely; report it without the content, which may hold a token.
            log.error("token_file_unreadable", server=name, path=str(path), error_type=type(exc).__name__)
            return None

    def save(self, credential: Credential) -> None:
        ensure_private_dir(self.tokens_dir)
        data = credential.model_dump(mode="json", exclude_none=True)
        data["header_scheme"] = credential.header_scheme  # None (a bare key) must survive the round trip
        atomic_write_bytes(self.path(credential.name), json.dumps(data, indent=2).encode(), mode=PRIVATE_FILE_MODE)

    def delete(self, name: str) -> bool:
        removed = False
        for path in (self.path(name), self.secret_file(name)):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def names(self) -> list[str]:
        if not self.tokens_dir.is_dir():
            return []
        return sorted(p.stem for p in self.tokens_dir.glob("*.json") if valid_server_name(p.stem))

    def all(self) -> list[Credential]:
        return [c for c in (self.load(n) for n in self.names()) if c is not None]

    # --- secret files for `--secret-mode file` -------------------------------------------------------------

    def secret_file(self, name: str) -> Path:
        if not valid_server_name(name):
            raise ValueError(f"invalid server name: {name!r}")
        return self.secrets_dir / f"{name}.token"

    def write_secret_file(self, name: str, secret: str) -> Path:
        """Write the bare secret (no newline) that `{file:...}` in the header pulls in."""
        ensure_private_dir(self.secrets_dir)
        path = self.secret_file(name)
        atomic_write_bytes(path, secret.encode(), mode=PRIVATE_FILE_MODE)
        return path

    def read_secret_file(self, name: str) -> str | None:
        try:
            return self.secret_file(name).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def ensure_secret_file(self, name: str) -> Path:
        """opencode fails every command when a `{file:}` target is missing, so one always exists (maybe empty)."""
        path = self.secret_file(name)
        if not path.exists():
            ensure_private_dir(self.secrets_dir)
            atomic_write_bytes(path, b"", mode=PRIVATE_FILE_MODE)
        return path
