"""Credentials on disk: `tokens/<name>.json` (0600, atomic) and the `{file:}` secret files opencode reads.

A token file holds the credential's secret values inline (the `file` store) or a `secret_ref` naming the
keychain item that holds them (stores/secret_store.py). The values of a keychain item are held here, in
memory, once the daemon has read or written them (`hold`): `load` fills them in, so the many readers of a
credential (the bridge at every request, the publisher, status) never wait for the keychain, and a keychain
that goes away mid-run costs nothing until a secret changes. A referenced credential whose values are not
held (the keychain did not answer at start) loads as None, like no credential: nothing is written or sent
with it, and `chctl status` says why (services/secret_vault.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from context_harness.primitives.names import valid_server_name
from context_harness.primitives.oauth import Credential
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir
from context_harness.stores.secret_store import SecretRef, Secrets, StoreKind

log = structlog.get_logger(__name__)

REF_FIELD = "secret_ref"
# Set when the values are inline only because the keychain failed as they had to be stored (a rotated
# refresh token is never lost): the daemon moves them back into the keychain once it answers.
PENDING_FIELD = "keychain_pending"


class SecretsChanged(Exception):
    """`TokenStore.save` was given new secret values for a credential whose values rest in the keychain:
    those go through the SecretVault (a keychain write first). A bug of ours, never a user's error."""


class TokenStore:
    def __init__(self, tokens_dir: Path, secrets_dir: Path) -> None:
        self.tokens_dir = tokens_dir
        self.secrets_dir = secrets_dir
        self._held: dict[str, Secrets] = {}  # keychain values read or written by this process, by server
        self._holding = threading.Lock()  # status and config work read credentials in threads

    def path(self, name: str) -> Path:
        """The token file of `name` (ValueError for a name that is not one)."""
        if not valid_server_name(name):
            raise ValueError(f"invalid server name: {name!r}")
        return self.tokens_dir / f"{name}.json"

    # --- reading -------------------------------------------------------------------------------------------

    def record(self, name: str) -> dict[str, Any] | None:
        """The token file as stored (values or reference); None when absent or unreadable."""
        path = self.path(name)
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            # Atomic writes make this unlikely; report it without the content, which may hold a token.
            log.error("token_file_unreadable", server=name, path=str(path), error_type=type(exc).__name__)
            return None
        return record if isinstance(record, dict) else None

    def load(self, name: str) -> Credential | None:
        record = self.record(name)
        if record is None:
            return None
        ref = reference(record)
        if ref is not None:
            held = self.held(name)
            if held is None or held.stamp != ref.stamp:
                return None  # not read from the keychain (yet): status says why
            record = held.fill(record)
        try:
            return Credential.model_validate(record)
        except (ValidationError, ValueError) as exc:
            log.error("token_file_unreadable", server=name, path=str(self.path(name)), error_type=type(exc).__name__)
            return None

    def names(self) -> list[str]:
        if not self.tokens_dir.is_dir():
            return []
        return sorted(p.stem for p in self.tokens_dir.glob("*.json") if valid_server_name(p.stem))

    def all(self) -> list[Credential]:
        return [c for c in (self.load(n) for n in self.names()) if c is not None]

    # --- the keychain's values, held in memory ------------------------------------------------------------

    def held(self, name: str) -> Secrets | None:
        with self._holding:
            return self._held.get(name)

    def hold(self, name: str, secrets: Secrets) -> None:
        with self._holding:
            self._held[name] = secrets

    def let_go(self, name: str) -> None:
        with self._holding:
            self._held.pop(name, None)

    # --- writing -------------------------------------------------------------------------------------------

    def save(self, credential: Credential) -> None:
        """Store a change that keeps the secret values where they are: inline values stay inline (a pending
        move to the keychain stays pending), a reference stays the same reference. New values for a
        credential whose values are in the keychain raise SecretsChanged: they go through the SecretVault."""
        current = self.record(credential.name)
        ref = reference(current) if current is not None else None
        if ref is None:
            self.write_inline(credential, pending=bool(current and current.get(PENDING_FIELD)))
            return
        held = self.held(credential.name)
        if held is None or held.stamp != ref.stamp or not held.same_values(Secrets.of(credential)):
            raise SecretsChanged(credential.name)
        self.write_ref(credential, ref)

    def write_inline(self, credential: Credential, *, pending: bool = False) -> None:
        """The `file` store: the values in the token file itself, in one atomic write."""
        data = _dump(credential)
        if pending:
            data[PENDING_FIELD] = True
        self._write(credential.name, data)
        self.let_go(credential.name)

    def write_ref(self, credential: Credential, ref: SecretRef) -> None:
        """The token file without the values, naming the keychain item (already written) that holds them."""
        data = _dump(credential)
        data.pop("api_key", None)
        data.pop("client_secret", None)
        data.pop("private_key", None)
        if isinstance(data.get("tokens"), dict):
            data["tokens"] = {k: v for k, v in data["tokens"].items() if k not in ("access_token", "refresh_token")}
        data[REF_FIELD] = ref.model_dump()
        self._write(credential.name, data)
        self.hold(credential.name, Secrets.of(credential, ref.stamp))

    def _write(self, name: str, data: dict[str, Any]) -> None:
        ensure_private_dir(self.tokens_dir)
        atomic_write_bytes(self.path(name), json.dumps(data, indent=2).encode(), mode=PRIVATE_FILE_MODE)

    def delete(self, name: str) -> bool:
        removed = False
        self.let_go(name)
        for path in (self.path(name), self.secret_file(name)):
            try:
                path.unlink()
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


class FileSecretStore:
    """The `file` store: a server's values inline in its token file, as before there was a choice."""

    kind: StoreKind = "file"

    def __init__(self, tokens: TokenStore) -> None:
        self.tokens = tokens

    def read(self, key: str) -> Secrets | None:
        record = self.tokens.record(key)
        if record is None or reference(record) is not None:
            return None
        credential = self.tokens.load(key)
        return Secrets.of(credential) if credential is not None else None

    def write(self, key: str, secrets: Secrets) -> None:
        """The token file (it must exist) rewritten with these values inline and no reference."""
        record = self.tokens.record(key)
        if record is None:
            raise FileNotFoundError(self.tokens.path(key))
        record.pop(REF_FIELD, None)
        record.pop(PENDING_FIELD, None)
        self.tokens.write_inline(Credential.model_validate(secrets.fill(record)))

    def delete(self, key: str) -> None:
        """Nothing to do: inline values live and die with their token file (`TokenStore.delete`), and every
        move out of this store rewrites that file without them."""


def reference(record: dict[str, Any]) -> SecretRef | None:
    """The keychain item a token file names instead of its values; None when the values are inline."""
    raw = record.get(REF_FIELD)
    if raw is None:
        return None
    try:
        return SecretRef.model_validate(raw)
    except ValidationError:
        return None


def is_pending(record: dict[str, Any]) -> bool:
    return bool(record.get(PENDING_FIELD))


def _dump(credential: Credential) -> dict[str, Any]:
    data = credential.model_dump(mode="json", exclude_none=True)
    data["header_scheme"] = credential.header_scheme  # None (a bare key) must survive the round trip
    return data
