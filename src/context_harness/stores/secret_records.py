"""A directory of JSON records, one per name, whose secret values rest inline or in the keychain: the token
files (`tokens/<name>.json`) and the client registrations (`clients/<name>.json`), 0600 in a 0700 directory.

A record holds its secret values (`SecretFields`) inline — the `file` store — or a `secret_ref` naming the
keychain item that holds them. The values of a keychain item are held here, in memory, once the daemon has read
or written them (`hold`): `filled` puts them back, so the many readers of a record never wait for the keychain,
and a keychain that goes away mid-run costs nothing until a secret changes. A referenced record whose values
are not held (the keychain did not answer at start) fills as None: nothing is sent with it, and `chctl status`
says why (services/secret_vault.py, which alone writes new values: the keychain item first, then the record).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from context_harness.primitives.names import valid_server_name
from context_harness.stores.atomic import PRIVATE_FILE_MODE, atomic_write_bytes, ensure_private_dir
from context_harness.stores.secret_store import SecretFields, SecretRef, Secrets, StoreKind

log = structlog.get_logger(__name__)

REF_FIELD = "secret_ref"
# Set when the values are inline only because the keychain failed as they had to be stored (a rotated
# refresh token is never lost): the daemon moves them back into the keychain once it answers.
PENDING_FIELD = "keychain_pending"


class SecretsChanged(Exception):
    """A record whose values rest in the keychain was to be written with new values without the SecretVault
    (a keychain write first). A bug of ours, never a user's error."""


class SecretRecords:
    """`<directory>/<name>.json` for every name; `kind` says what they are (`token`, `client`; their file is a
    `<kind>_file` in `chctl status`), `what` their values in words (`secret`, `client secret`); each one's
    keychain item is `<name><key_suffix>` (a credential's is the server's name, a registration's `<name>/client`:
    `/` is in no name). `recovered`: what else changes in a record whose keychain item turned out newer than it
    (a crash between the two writes), e.g. a credential's state. `disposable`: a record that is cheaply made
    again (a client registration: the next login registers one) is dropped whole when its keychain item is gone
    or was written for another record, instead of staying unreadable. `relogin`: the command (with `{name}`) that
    stores new values when the keychain lost them."""

    def __init__(
        self,
        directory: Path,
        fields: SecretFields,
        kind: str,
        what: str = "secret",
        key_suffix: str = "",
        recovered: Callable[[dict[str, Any]], dict[str, Any]] = dict,
        disposable: bool = False,
        relogin: str = "chctl auth {name}",
    ) -> None:
        self.directory = directory
        self.fields = fields
        self.kind = kind
        self.what = what
        self.key_suffix = key_suffix
        self.recovered = recovered
        self.disposable = disposable
        self.relogin = relogin
        self._held: dict[str, Secrets] = {}  # keychain values read or written by this process, by name
        self._holding = threading.Lock()  # status and config work read records in threads

    def path(self, name: str) -> Path:
        """The record of `name` (ValueError for a name that is not one)."""
        if not valid_server_name(name):
            raise ValueError(f"invalid server name: {name!r}")
        return self.directory / f"{name}.json"

    def item_key(self, name: str) -> str:
        return name + self.key_suffix

    def fix(self, name: str) -> str:
        """What stores `name`'s values anew, in backquotes."""
        return f"`{self.relogin.format(name=name)}`"

    # --- reading -------------------------------------------------------------------------------------------

    def record(self, name: str) -> dict[str, Any] | None:
        """The record as stored (values or reference); None when absent or unreadable."""
        path = self.path(name)
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            # Atomic writes make this unlikely; report it without the content, which may hold a secret.
            log.error(f"{self.kind}_file_unreadable", server=name, path=str(path), error_type=type(exc).__name__)
            return None
        return record if isinstance(record, dict) else None

    def reference(self, name: str) -> SecretRef | None:
        record = self.record(name)
        return reference(record) if record is not None else None

    def filled(self, name: str) -> dict[str, Any] | None:
        """The record with its values, inline or held; None when absent, or referenced and not held."""
        record = self.record(name)
        if record is None:
            return None
        ref = reference(record)
        if ref is None:
            return record
        held = self.held(name)
        if held is None or held.stamp != ref.stamp:
            return None  # not read from the keychain (yet): status says why
        return self.fields.fill(record, held)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if valid_server_name(p.stem))

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

    def update(self, name: str, data: Mapping[str, Any]) -> None:
        """Store a change that keeps the values where they are: inline values stay inline (a pending move to the
        keychain stays pending), a reference stays the same reference. New values for a record whose values are
        in the keychain raise SecretsChanged: they go through the SecretVault."""
        current = self.record(name)
        ref = reference(current) if current is not None else None
        if ref is None:
            self.write_inline(name, data, pending=bool(current and current.get(PENDING_FIELD)))
            return
        held = self.held(name)
        if held is None or held.stamp != ref.stamp or not held.same_values(self.fields.take(data)):
            raise SecretsChanged(name)
        self.write_ref(name, data, ref)

    def write_inline(self, name: str, data: Mapping[str, Any], *, pending: bool = False) -> None:
        """The `file` store: the values in the record itself, in one atomic write."""
        record = {k: v for k, v in data.items() if k not in (REF_FIELD, PENDING_FIELD)}
        if pending:
            record[PENDING_FIELD] = True
        self._write(name, record)
        self.let_go(name)

    def write_ref(self, name: str, data: Mapping[str, Any], ref: SecretRef) -> None:
        """The record without the values, naming the keychain item (already written) that holds them."""
        record = self.fields.strip({k: v for k, v in data.items() if k != PENDING_FIELD})
        record[REF_FIELD] = ref.model_dump()
        self._write(name, record)
        self.hold(name, self.fields.take(data, ref.stamp))

    def _write(self, name: str, data: dict[str, Any]) -> None:
        ensure_private_dir(self.directory)
        atomic_write_bytes(self.path(name), json.dumps(data, indent=2).encode(), mode=PRIVATE_FILE_MODE)

    def delete(self, name: str) -> bool:
        """Remove the record (its keychain item is the vault's to remove); whether there was one."""
        self.let_go(name)
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
            return True
        return False


class FileSecretStore:
    """The `file` store: a record's values inline in it, as before there was a choice."""

    kind: StoreKind = "file"

    def __init__(self, records: SecretRecords) -> None:
        self.records = records

    def read(self, key: str) -> Secrets | None:
        record = self.records.record(key)
        if record is None or reference(record) is not None:
            return None
        return self.records.fields.take(record)

    def write(self, key: str, secrets: Secrets) -> None:
        """The record (it must exist) rewritten with these values inline and no reference."""
        record = self.records.record(key)
        if record is None:
            raise FileNotFoundError(self.records.path(key))
        self.records.write_inline(key, self.records.fields.fill(record, secrets))

    def delete(self, key: str) -> None:
        """Nothing to do: inline values live and die with their record (`SecretRecords.delete`), and every
        move out of this store rewrites that record without them."""


def reference(record: Mapping[str, Any]) -> SecretRef | None:
    """The keychain item a record names instead of its values; None when the values are inline."""
    raw = record.get(REF_FIELD)
    if raw is None:
        return None
    try:
        return SecretRef.model_validate(raw)
    except ValidationError:
        return None


def is_pending(record: Mapping[str, Any]) -> bool:
    return bool(record.get(PENDING_FIELD))
