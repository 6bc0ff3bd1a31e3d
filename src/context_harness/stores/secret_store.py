"""Where a credential's secret values rest: the `SecretStore` interface, and the values that cross it.

Only the secret values move between stores: the API key, the access and refresh tokens, the client secret and a
client credentials login's private key (`Secrets`). Everything else about a credential — expiry, issuer, client
id, the recorded URL, its state — stays in `tokens/<name>.json`, which remains the truth about state. That file
holds either the values themselves (the `file` store, the format from before there was a choice) or a
`SecretRef` naming the keychain item that holds them, with the item's stamp: a crash between the keychain write
and the file write is seen at the next start as a stamp that differs, and the keychain's newer values are taken
(docs/design.md, "Secrets at rest").

The two implementations are `FileSecretStore` (stores/token_store.py: the values inline in the token file)
and `KeyringSecretStore` (stores/keychain.py: one item per server in the OS keychain). Their calls block; the
daemon runs them off the event loop with a deadline (services/secret_vault.py).
"""

from __future__ import annotations

import secrets as random_source
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from context_harness.primitives.oauth import Credential

StoreKind = Literal["file", "keyring"]
STORE_KINDS: tuple[StoreKind, ...] = ("file", "keyring")


class SecretsUnavailable(Exception):
    """A store could not be read or written now (the keychain is locked, gone or too slow). The message
    says why in words and never holds a secret."""


class Secrets(BaseModel):
    """A credential's secret values, and the stamp of the write that stored them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    api_key: str | None = Field(default=None, repr=False)
    access_token: str | None = Field(default=None, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    client_secret: str | None = Field(default=None, repr=False)
    private_key: str | None = Field(default=None, repr=False)  # a client credentials login's PEM key
    # Random per write: the token file's reference names the stamp it expects (equality only, no order).
    stamp: str = ""

    @classmethod
    def of(cls, credential: Credential, stamp: str = "") -> Secrets:
        tokens = credential.tokens
        return cls(
            api_key=credential.api_key,
            access_token=tokens.access_token if tokens else None,
            refresh_token=tokens.refresh_token if tokens else None,
            client_secret=credential.client_secret,
            private_key=credential.private_key,
            stamp=stamp,
        )

    def same_values(self, other: Secrets) -> bool:
        return self.values() == other.values()

    def values(self) -> tuple[str | None, ...]:
        return (self.api_key, self.access_token, self.refresh_token, self.client_secret, self.private_key)

    def fill(self, record: dict[str, object]) -> dict[str, object]:
        """`record` (a token file's JSON without its values) with these values put back in their places."""
        filled = {**record, "api_key": self.api_key, "client_secret": self.client_secret}
        filled["private_key"] = self.private_key
        tokens = record.get("tokens")
        if isinstance(tokens, dict):
            filled["tokens"] = {**tokens, "access_token": self.access_token, "refresh_token": self.refresh_token}
        return filled


def new_stamp() -> str:
    return random_source.token_hex(8)


class SecretRef(BaseModel):
    """What a token file holds instead of the values when they rest in the keychain."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    store: Literal["keyring"] = "keyring"
    service: str  # the keychain item's service and user name, as `secret-tool lookup service S username K` takes
    key: str
    stamp: str


class SecretStore(Protocol):
    """Read, write and delete one server's secret values by its name (`key`). Calls block."""

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
