"""OAuth client registrations on disk: `clients/<server>.json`, 0600 in a 0700 directory.

A registration is bound to the issuer that made it: `get` never hands one to another issuer. Its client id,
issuer, method, redirect URIs and expiry stay in the file; its client secret, if it has one, rests inline or in
the keychain like a credential's values (stores/secret_records.py: item `<server>/client`). New registrations
go through `keep` (a login's `RegisteredClients`, oauth/flow_client.py): the daemon's (services/client_vault.py)
writes the keychain item first.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from pydantic import ValidationError

from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.result import Result, Success
from context_harness.stores.secret_records import SecretRecords
from context_harness.stores.secret_store import SecretFields

log = structlog.get_logger(__name__)

# A registration's one secret value; its client id goes into the keychain item too, to tell whose secret it is.
CLIENT_FIELDS = SecretFields(("client_secret",), identity="client_id")
CLIENT_KEY_SUFFIX = "/client"


class ClientStore:
    """The registrations' files. As a login's `RegisteredClients` on its own it is the `file` store (secrets
    inline): what a login outside the daemon uses."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.records = SecretRecords(
            directory, CLIENT_FIELDS, "client", "client secret", CLIENT_KEY_SUFFIX, disposable=True
        )

    def stored(self, server: str) -> ClientRegistration | None:
        """`server`'s registration with its secret; None if absent, unreadable, or its secret rests in a keychain
        that has not given it."""
        filled = self.records.filled(server)
        if filled is None:
            return None
        try:
            return ClientRegistration.model_validate(filled)
        except ValidationError:
            log.warning("client_registration_unreadable", server=server)
            return None

    def get(self, server: str, issuer: str) -> ClientRegistration | None:
        """The registration for `server` made at `issuer`; None if absent, unreadable or for another issuer."""
        registration = self.stored(server)
        if registration is None:
            return None
        if registration.issuer != issuer:
            log.info("client_registration_issuer_changed", server=server, issuer=issuer)
            return None
        if registration.secret_expired():
            log.info("client_registration_secret_expired", server=server)
            return None
        return registration

    def save(self, server: str, registration: ClientRegistration) -> None:
        """Write `registration`, its secret staying where the stored one's rests (`SecretRecords.update`)."""
        self.records.update(server, dump(registration))

    async def keep(self, server: str, registration: ClientRegistration) -> Result[None]:
        self.records.write_inline(server, dump(registration))
        return Success(None)

    def remember_auth_method(self, server: str, client_id: str, auth_method: str) -> None:
        """The token endpoint took `client_id`'s secret another way than its registration said: record the
        way that worked, so refreshes and revocation use it too. A metadata change: the secret stays put."""
        stored = self.stored(server)
        if stored is not None and stored.client_id == client_id and stored.token_endpoint_auth_method != auth_method:
            self.save(server, stored.model_copy(update={"token_endpoint_auth_method": auth_method}))
            log.info("client_auth_method_updated", server=server, auth_method=auth_method)

    def is_for(self, server: str, client_id: str) -> bool:
        """Whether `server`'s stored registration (readable or not) is the one of `client_id`."""
        record = self.records.record(server)
        return record is not None and record.get("client_id") == client_id

    async def drop(self, server: str, client_id: str) -> bool:
        return self.forget(server, client_id)

    def forget(self, server: str, client_id: str) -> bool:
        """Delete `server`'s registration if it is the one for `client_id`; whether one was deleted."""
        if not self.is_for(server, client_id):
            return False
        self.delete(server)
        return True

    def delete(self, server: str) -> None:
        self.records.delete(server)


def dump(registration: ClientRegistration) -> dict[str, object]:
    return registration.model_dump(mode="json")
