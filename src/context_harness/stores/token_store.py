"""Credentials on disk: `tokens/<name>.json` (0600, atomic) and the `{file:}` secret files opencode reads.

A token file holds the credential's secret values (`TOKEN_FIELDS`) inline (the `file` store) or a `secret_ref`
naming the keychain item that holds them (stores/secret_records.py, which keeps the keychain's values in memory
once read: `load` never waits for the keychain). A referenced credential whose values are not held (the
keychain did not answer at start) loads as None, like no credential: nothing is written or sent with it, and
`chctl status` says why (services/secret_vault.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from context_harness.primitives.names import valid_server_name
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir
from context_harness.stores.secret_records import SecretRecords
from context_harness.stores.secret_store import SecretFields, SecretRef, Secrets

log = structlog.get_logger(__name__)

# A credential's secret values: the key and the secret headers that go with it (a registry server's
# `--header-env`), both tokens, and the client secret refreshes and revocation send.
TOKEN_FIELDS = SecretFields(
    ("api_key", "extra_headers", "client_secret", "tokens.access_token", "tokens.refresh_token")
)


class TokenStore:
    def __init__(self, tokens_dir: Path, secrets_dir: Path) -> None:
        self.tokens_dir = tokens_dir
        self.secrets_dir = secrets_dir
        self.records = SecretRecords(tokens_dir, TOKEN_FIELDS, "token", recovered=recovered)

    def path(self, name: str) -> Path:
        """The token file of `name` (ValueError for a name that is not one)."""
        return self.records.path(name)

    # --- reading -------------------------------------------------------------------------------------------

    def record(self, name: str) -> dict[str, Any] | None:
        """The token file as stored (values or reference); None when absent or unreadable."""
        return self.records.record(name)

    def load(self, name: str) -> Credential | None:
        filled = self.records.filled(name)
        if filled is None:
            return None
        try:
            return Credential.model_validate(filled)
        except (ValidationError, ValueError) as exc:
            log.error("token_file_unreadable", server=name, path=str(self.path(name)), error_type=type(exc).__name__)
            return None

    def names(self) -> list[str]:
        return self.records.names()

    def all(self) -> list[Credential]:
        return [c for c in (self.load(n) for n in self.names()) if c is not None]

    # --- the keychain's values, held in memory ------------------------------------------------------------

    def held(self, name: str) -> Secrets | None:
        return self.records.held(name)

    def hold(self, name: str, secrets: Secrets) -> None:
        self.records.hold(name, secrets)

    def let_go(self, name: str) -> None:
        self.records.let_go(name)

    # --- writing -------------------------------------------------------------------------------------------

    def save(self, credential: Credential) -> None:
        """Store a change that keeps the secret values where they are (`SecretRecords.update`): new values for a
        credential whose values are in the keychain raise SecretsChanged: they go through the SecretVault."""
        self.records.update(credential.name, dump(credential))

    def write_inline(self, credential: Credential, *, pending: bool = False) -> None:
        """The `file` store: the values in the token file itself, in one atomic write."""
        self.records.write_inline(credential.name, dump(credential), pending=pending)

    def write_ref(self, credential: Credential, ref: SecretRef) -> None:
        """The token file without the values, naming the keychain item (already written) that holds them."""
        self.records.write_ref(credential.name, dump(credential), ref)

    def delete(self, name: str) -> bool:
        removed = self.records.delete(name)
        try:
            self.secret_file(name).unlink()
            removed = True
        except FileNotFoundError:
            pass
        return removed

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


def dump(credential: Credential) -> dict[str, Any]:
    """The token file's JSON of `credential`, values included."""
    data = credential.model_dump(mode="json", exclude_none=True)
    data["header_scheme"] = credential.header_scheme  # None (a bare key) must survive the round trip
    return data


def recovered(record: dict[str, Any]) -> dict[str, Any]:
    """A token file whose keychain item turned out newer (a crash between the two writes): only a login or a
    refresh that worked writes new values, so the credential is active again."""
    update: dict[str, Any] = {"last_error": None}
    if record.get("kind") == "oauth":
        update["state"] = TokenState.ACTIVE.value
    return {**record, **update}
