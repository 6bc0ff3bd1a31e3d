"""Where a server's secret values rest: the `SecretStore` interface, and the values that cross it.

Only secret values move between stores. Everything else — expiry, issuer, client id, the recorded URL, a
state — stays in the JSON record it belongs to, which remains the truth about state. Two kinds of record hold
a server's secrets today (stores/secret_records.py): its credential, `tokens/<name>.json` (the API key and the
secret headers stored with it, the access and refresh tokens, and the client secret they are refreshed with),
and its OAuth client registration, `clients/<name>.json` (the client secret). `SecretFields` says which fields
of a record are secret values; a record holds either the values themselves (the `file` store, the format from
before there was a choice) or a `SecretRef` naming the keychain item that holds them, with the item's stamp: a
crash between the keychain write and the file write is seen at the next start as a stamp that differs, and the
keychain's newer values are taken (docs/design.md, "Secrets at rest").

The two implementations are `FileSecretStore` (stores/secret_records.py: the values inline in their record)
and `KeyringSecretStore` (stores/keychain.py: one item per record in the OS keychain). Their calls block; the
daemon runs them off the event loop with a deadline (services/secret_vault.py).
"""

from __future__ import annotations

import json
import secrets as random_source
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

from pydantic import BaseModel, ConfigDict

StoreKind = Literal["file", "keyring"]
STORE_KINDS: tuple[StoreKind, ...] = ("file", "keyring")
# The two names a keychain item's JSON reserves beside the values.
STAMP, IDENTITY = "stamp", "identity"
# A secret value: a string, or an object of strings (an API key's secret headers, by header name).
SecretValue = str | Mapping[str, str]


class SecretsUnavailable(Exception):
    """A store could not be read or written now (the keychain is locked, gone or too slow). The message
    says why in words and never holds a secret."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """One record's secret values by name (`api_key`, `access_token`, `client_secret` ...), the stamp of the
    write that stored them, and whose values they are (`SecretFields.identity`: a registration's client id)."""

    values: Mapping[str, SecretValue] = field(default_factory=dict, repr=False)
    # Random per write: the record's reference names the stamp it expects (equality only, no order).
    stamp: str = ""
    identity: str | None = None

    def same_values(self, other: Secrets) -> bool:
        """The same values for the same record, whatever the stamps."""
        return dict(self.values) == dict(other.values) and self.identity == other.identity

    def to_json(self) -> str:
        """The keychain item's password: `{"<name>": "<value>", ..., "stamp": "...", "identity": "..."}`."""
        doc: dict[str, Any] = {**self.values, STAMP: self.stamp}
        if self.identity is not None:
            doc[IDENTITY] = self.identity
        return json.dumps(doc)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Secrets:
        """What `to_json` wrote (or an item from before `identity`); ValueError for anything else."""
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get(STAMP, ""), str):
            raise ValueError("not a secrets item")
        identity = doc.get(IDENTITY)
        values = {k: v for k, v in doc.items() if k not in (STAMP, IDENTITY) and is_secret_value(v)}
        return cls(values, doc.get(STAMP, ""), identity if isinstance(identity, str) else None)


@dataclass(frozen=True, slots=True)
class SecretFields:
    """Which fields of a record (its JSON as stored) hold secret values: `api_key`, or `tokens.access_token` (the
    field `access_token` of the object `tokens`). A value is named by its last part, so two paths of one record
    never end alike.

    `identity`: a top-level field naming whose values these are (a registration's `client_id`). It stays in the
    record and a copy goes into the keychain item, so an item written for a new registration, and then a crash
    before the record named it, is never taken for the old registration's newer values."""

    paths: tuple[str, ...]
    identity: str | None = None

    def take(self, record: Mapping[str, Any], stamp: str = "") -> Secrets:
        """The values `record` holds (absent and null ones left out)."""
        values: dict[str, SecretValue] = {}
        for path in self.paths:
            parent, last = _parent(record, path)
            value = parent.get(last) if parent is not None else None
            if is_secret_value(value):
                values[last] = dict(value) if isinstance(value, Mapping) else value
        identity = record.get(self.identity) if self.identity else None
        return Secrets(values, stamp, identity if isinstance(identity, str) else None)

    def strip(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` without its values (a copy: nested objects are copied where a value leaves them)."""
        return self.fill(record, Secrets())

    def fill(self, record: Mapping[str, Any], secrets: Secrets) -> dict[str, Any]:
        """`record` with `secrets`' values in their places (a value it lacks leaves its field out). A nested
        value goes back only where its object is there (`tokens` of an OAuth credential, not of an API key)."""
        filled: dict[str, Any] = dict(record)
        for path in self.paths:
            *parents, last = path.split(".")
            target = filled
            for part in parents:
                inner = target.get(part)
                if not isinstance(inner, dict):
                    break
                target[part] = dict(inner)
                target = target[part]
            else:
                target.pop(last, None)
                if last in secrets.values:
                    target[last] = secrets.values[last]
        return filled


def is_secret_value(value: Any) -> TypeGuard[SecretValue]:
    """A string, or an object of strings (not empty: an empty one is no value)."""
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, str)


def _parent(record: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any] | None, str]:
    *parents, last = path.split(".")
    current: Any = record
    for part in parents:
        current = current.get(part) if isinstance(current, Mapping) else None
    return (current if isinstance(current, Mapping) else None), last


def new_stamp() -> str:
    return random_source.token_hex(8)


class SecretRef(BaseModel):
    """What a record holds instead of the values when they rest in the keychain."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    store: Literal["keyring"] = "keyring"
    service: str  # the keychain item's service and user name, as `secret-tool lookup service S username K` takes
    key: str
    stamp: str


class SecretStore(Protocol):
    """Read, write and delete one record's secret values by its key: a server's name for its credential, the
    name and a suffix for its other records (`linear/client`: stores/secret_records.py). Calls block."""

    kind: StoreKind

    def read(self, key: str) -> Secrets | None:
        """The values stored under `key`, None when there are none; SecretsUnavailable when the store cannot
        answer."""
        ...

    def write(self, key: str, secrets: Secrets) -> None:
        """Store `secrets` under `key`, replacing what was there; SecretsUnavailable when the store cannot."""
        ...

    def delete(self, key: str) -> None:
        """Forget what is stored under `key` (nothing there is fine)."""
        ...
