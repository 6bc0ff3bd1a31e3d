"""The daemon's client registrations: a login's `RegisteredClients` (oauth/flow_client.py) whose secrets go
through the SecretVault (a confidential client's secret in the keychain item `<server>/client`, written before
the file names it)."""

from __future__ import annotations

from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.secret_vault import SecretVault
from context_harness.stores.client_store import ClientStore


class ClientVault:
    def __init__(self, store: ClientStore, vault: SecretVault) -> None:
        self.store = store
        self.vault = vault

    def get(self, server: str, issuer: str) -> ClientRegistration | None:
        return self.store.get(server, issuer)

    async def keep(self, server: str, registration: ClientRegistration) -> Result[None]:
        return await self.vault.keep_client(server, registration)

    async def drop(self, server: str, client_id: str) -> bool:
        return await self.vault.drop_client(server, client_id)

    def remember_auth_method(self, server: str, client_id: str, auth_method: str) -> None:
        self.store.remember_auth_method(server, client_id, auth_method)

    async def readable(self, server: str) -> Result[None]:
        """Before a login that would use `server`'s stored client: its secret, if it rests in the keychain, read
        (once more, if the keychain did not give it before). A registration the keychain no longer holds is
        dropped there, and the login registers a new client."""
        problem = await self.vault.unreadable(self.store.records, server)
        if problem is None:
            return Success(None)
        return Failure(
            f"{server}'s stored OAuth client cannot be used: its client secret rests in the keychain, and {problem}",
            ErrorCode.KEYCHAIN_UNAVAILABLE,
            "unlock the keychain (or start its service), then log in again; or log in with another client: "
            f"`chctl auth {server} --client-id ID --client-secret -`",
        )
