"""Identity providers and the sign-ins made there, on disk: `idps/<name>.json`, 0600 in a 0700 directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import structlog
from pydantic import ValidationError

from context_harness.primitives.idp import IdpLogin
from context_harness.primitives.names import valid_server_name
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir

log = structlog.get_logger(__name__)


class IdpStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        """The file of `name` (ValueError for a name that is not one: IdP names follow server names' rule)."""
        if not valid_server_name(name):
            raise ValueError(f"invalid identity provider name: {name!r}")
        return self.directory / f"{name}.json"

    def load(self, name: str) -> IdpLogin | None:
        try:
            return IdpLogin.model_validate_json(self.path(name).read_bytes())
        except FileNotFoundError:
            return None
        except (ValidationError, ValueError) as exc:  # without the content: it holds tokens
            log.error("idp_file_unreadable", idp=name, error_type=type(exc).__name__)
            return None

    def save(self, login: IdpLogin) -> None:
        ensure_private_dir(self.directory)
        data = login.model_dump_json(indent=2, exclude_none=True).encode()
        atomic_write_bytes(self.path(login.name), data, mode=PRIVATE_FILE_MODE)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if valid_server_name(p.stem))
