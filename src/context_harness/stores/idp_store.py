"""Identity providers and the sign-ins made there, on disk: `idps/<name>.json`, 0600 in a 0700 directory.

The sign-in's tokens (ID, refresh and access token) and the client secret at the IdP rest like every other
secret (stores/secret_records.py): inline in the file, or in the keychain item `<name>/idp` that the file names.
New values go through the SecretVault (`keep`); `save` stores a change that keeps them where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from context_harness.primitives.idp import IdpLogin
from context_harness.primitives.oauth import TokenState
from context_harness.stores.secret_records import SecretRecords
from context_harness.stores.secret_store import SecretFields

log = structlog.get_logger(__name__)

# A sign-in's secret values; its client id goes into the keychain item too, so an item written for another
# registration at the IdP (`chctl idp add` anew, then a crash) is never taken for this one's.
IDP_FIELDS = SecretFields(("client_secret", "id_token", "refresh_token", "access_token"), identity="client_id")
IDP_KEY_SUFFIX = "/idp"
# A keychain that lost a sign-in's values lost the client secret too: the IdP is added again, then signed in to.
IDP_RELOGIN = "chctl idp add {name} --issuer URL --client-id ID` and `chctl idp login {name}"


class IdpStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.records = SecretRecords(
            directory, IDP_FIELDS, "idp", "IdP sign-in", IDP_KEY_SUFFIX, recovered=recovered, relogin=IDP_RELOGIN
        )

    def path(self, name: str) -> Path:
        """The file of `name` (ValueError for a name that is not one: IdP names follow server names' rule)."""
        return self.records.path(name)

    def load(self, name: str) -> IdpLogin | None:
        """`name`'s IdP and sign-in with its values; None if absent, unreadable, or its values rest in a keychain
        that has not given them (`SecretVault.unreadable` says why)."""
        filled = self.records.filled(name)
        if filled is None:
            return None
        try:
            return IdpLogin.model_validate(filled)
        except (ValidationError, ValueError) as exc:  # without the content: it holds tokens
            log.error("idp_file_unreadable", idp=name, error_type=type(exc).__name__)
            return None

    def metadata(self, name: str) -> IdpLogin | None:
        """`name`'s IdP and the state of its sign-in, without the values (whether the keychain gave them or not);
        None if absent or unreadable."""
        record = self.records.record(name)
        if record is None:
            return None
        try:
            return IdpLogin.model_validate(self.records.fields.strip(record))
        except (ValidationError, ValueError):
            return None

    def save(self, login: IdpLogin) -> None:
        """Store a change that keeps the values where they are (a state, an error): new values go through the
        SecretVault, whose `keep` writes the keychain item first."""
        self.records.update(login.name, dump(login))

    def names(self) -> list[str]:
        return self.records.names()


def dump(login: IdpLogin) -> dict[str, Any]:
    """The file's JSON of `login`, values included."""
    return login.model_dump(mode="json", exclude_none=True)


def recovered(record: dict[str, Any]) -> dict[str, Any]:
    """A file whose keychain item turned out newer (a crash between the two writes): a sign-in or a refresh that
    worked wrote it, so the sign-in stands again if it has an ID token."""
    state = TokenState.ACTIVE if record.get("id_token") else TokenState.PENDING_AUTH
    return {**record, "state": state.value, "last_error": None}
