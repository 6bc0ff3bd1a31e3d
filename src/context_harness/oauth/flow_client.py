"""Which OAuth client a login uses (the one given, the one stored, or one registered now by DCR), whether
the authorization server accepts it before a person is sent there, and what to say when it does not.
Part of oauth/flow.py's login; it writes nothing but client registrations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import aiohttp
import structlog

from context_harness.oauth.discovery import AuthServerMetadata, Discovery
from context_harness.oauth.preflight import check_authorization_request
from context_harness.oauth.registration import (
    RegistrationLimit,
    build_registration_request,
    redirect_fits,
    register_client,
)
from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.outside_values import describe_url
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

log = structlog.get_logger(__name__)


class RegisteredClients(Protocol):
    """What a login does with client registrations: find the one for an issuer, keep a new one (its secret
    where secrets go), drop one the server no longer knows, learn how it authenticates.
    (`stores.client_store.ClientStore` is one on its own, the `file` store; the daemon's is
    `services.client_vault.ClientVault`.)"""

    def get(self, server: str, issuer: str) -> ClientRegistration | None: ...

    async def keep(self, server: str, registration: ClientRegistration) -> Result[None]: ...

    async def drop(self, server: str, client_id: str) -> bool: ...

    def remember_auth_method(self, server: str, client_id: str, auth_method: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str | None
    auth_method: str | None
    # "given": --client-id, the registry or a metadata document; "stored": a registration on disk;
    # "registered": registered just now.
    source: str = "given"
    preregistered: bool = False


def explicit_auth_method(secret: str | None, auth_server: AuthServerMetadata, chosen: str | None = None) -> str | None:
    """For a client id the user brought: the method they chose, else Basic unless the server only takes
    the secret in the form."""
    if chosen:
        return chosen
    if not secret:
        return "none"
    methods = auth_server.token_endpoint_auth_methods_supported
    if methods and "client_secret_basic" not in methods and "client_secret_post" in methods:
        return "client_secret_post"
    return "client_secret_basic"


async def resolve_client(
    session: aiohttp.ClientSession,
    server_name: str,
    discovery: Discovery,
    *,
    store: RegisteredClients,
    stored: ClientRegistration | None,
    redirect_uri: str,
    scopes: Sequence[str],
    http_timeout_s: float,
    registrations: RegistrationLimit | None,
) -> Result[Client]:
    """The client when none was given (flag, registry or metadata document): the stored registration if it
    fits, else one registered now (DCR).

    A client the user registered is used whatever the port (its app names the redirect URIs, not us); one
    we registered is reused only with the exact redirect URI it was registered with, since many servers
    match redirect URIs exactly: with another port we register again.
    """
    auth_server = discovery.auth_server
    if stored is not None and (stored.preregistered or redirect_fits(stored, redirect_uri, exact=True)):
        return Success(
            Client(
                stored.client_id,
                stored.client_secret,
                stored.token_endpoint_auth_method,
                "stored",
                stored.preregistered,
            )
        )
    # No Client ID Metadata Document here (none configured, or the server takes none): DCR is what is left.
    if auth_server.registration_endpoint is None:
        return cannot_register(auth_server.issuer, server_name)
    if registrations is not None and (refused := registrations.spend(auth_server.issuer)):
        return refused
    metadata = build_registration_request([redirect_uri], scopes)
    registered = await register_client(
        session, auth_server.registration_endpoint, metadata, auth_server.issuer, http_timeout_s
    )
    if isinstance(registered, Failure):
        return _not_registered(server_name, discovery, registered)
    saved = await save_client(store, server_name, registered.value)
    if isinstance(saved, Failure):
        return saved
    reg = registered.value
    return Success(Client(reg.client_id, reg.client_secret, reg.token_endpoint_auth_method, "registered"))


def _not_registered(server_name: str, discovery: Discovery, failure: Failure) -> Failure:
    """A registration refused at the default endpoint of a server that published no OAuth metadata at all: it
    may not use OAuth at all (an API key, say), which only a person can tell."""
    if not discovery.default_endpoints:
        return failure
    return Failure(
        f"{server_name} publishes no OAuth metadata, and registering a client at its default endpoint "
        f"{describe_url(discovery.auth_server.registration_endpoint or '')} failed: {failure.error}",
        failure.code,
        f"if {server_name} takes an API key: `chctl add {server_name} -k KEY`; if you have an OAuth client for it: "
        f"`chctl auth {server_name} --client-id ID`",
    )


def cannot_register(issuer: str, server_name: str) -> Failure:
    return Failure(
        f"{issuer} offers no dynamic client registration and no client id was given",
        ErrorCode.AUTH_REQUIRED,
        own_client_hint(server_name),
    )


def own_client_hint(server_name: str) -> str:
    return (
        f"register an OAuth app with the provider, then `chctl auth {server_name} --client-id ID --client-secret -` "
        "(`-` asks for the secret, if one was issued)"
    )


async def save_client(store: RegisteredClients, server_name: str, registration: ClientRegistration) -> Result[None]:
    """Keep `registration` (its secret where secrets go: the keychain, in the daemon)."""
    try:
        return await store.keep(server_name, registration)
    except OSError as exc:
        return Failure(
            f"cannot save the client registration ({type(exc).__name__})",
            ErrorCode.PERMISSION_DENIED,
            "check the permissions of ~/.context-harness/clients",
        )


async def forget_client(store: RegisteredClients, server_name: str, client: Client, why: str) -> None:
    if client.source != "given" and await store.drop(server_name, client.client_id):
        log.warning("client_registration_dropped", server=server_name, reason=why)


def refused(server_name: str, issuer: str, client: Client, redirect_uri: str, reason: str) -> Failure:
    """The authorization server refused the login request: say which client and redirect URI, and what to do."""
    about_redirect = "redirect" in reason.lower()
    what = (
        f"the redirect URI {redirect_uri} is not registered for client {client.client_id!r}"
        if about_redirect
        else f"{issuer} does not accept client {client.client_id!r}"
    )
    if client.source == "given" or client.preregistered:
        hint = (
            "check the client id, and that the app you registered with the provider allows the redirect URI "
            f"http://127.0.0.1/callback (any port), or a fixed one: `chctl auth {server_name} --port P`"
        )
        if client.preregistered:
            hint = f"the stored client was forgotten: run `chctl auth {server_name} --client-id ID`; " + hint
    else:
        hint = own_client_hint(server_name)
    return Failure(f"{what} ({reason})", ErrorCode.INVALID_CLIENT, hint)


async def accepted_client(
    session: aiohttp.ClientSession,
    server_name: str,
    discovery: Discovery,
    client_store: RegisteredClients,
    stored: ClientRegistration | None,
    explicit: Client | None,
    redirect_uri: str,
    scopes: list[str],
    authorization_url: Callable[[str], str],
    *,
    http_timeout_s: float,
    registrations: RegistrationLimit | None,
) -> Result[Client]:
    """The client to send the person with, once the authorization server is seen to accept it."""
    auth_server = discovery.auth_server
    resolve = partial(
        resolve_client,
        session,
        server_name,
        discovery,
        store=client_store,
        redirect_uri=redirect_uri,
        scopes=scopes,
        http_timeout_s=http_timeout_s,
        registrations=registrations,
    )
    if explicit is not None:
        client = explicit
    else:
        resolved = await resolve(stored=stored)
        if isinstance(resolved, Failure):
            return resolved
        client = resolved.value
    # A client registered a moment ago is known; any other may have been forgotten, or may not allow our
    # redirect URI: ask before the person meets the server's error page.
    if client.source == "registered":
        return Success(client)
    refusal = await check_authorization_request(
        session, authorization_url(client.client_id), redirect_uri, http_timeout_s
    )
    if refusal is not None and client.source == "stored":
        # The server forgot the client we registered (restart, expiry, deletion): forget it too.
        await forget_client(client_store, server_name, client, "the authorization server refused it")
        if not client.preregistered and auth_server.registration_endpoint is not None:
            again = await resolve(stored=None)
            if isinstance(again, Failure):
                return again
            stale, client = client, again.value
            url = authorization_url(client.client_id)
            refusal = await check_authorization_request(session, url, redirect_uri, http_timeout_s)
            if refusal is None:
                log.info("client_registered_again", server=server_name, dropped_client=stale.client_id)
    if refusal is not None:
        return refused(server_name, auth_server.issuer, client, redirect_uri, refusal)
    return Success(client)


async def remember_given_client(
    store: RegisteredClients, server_name: str, issuer: str, client: Client, redirect_uri: str
) -> None:
    """A client the user brought is remembered like a registered one, so a plain `chctl auth NAME` works next time."""
    registration = ClientRegistration(
        issuer=issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method or "none",
        redirect_uris=[redirect_uri],
        registered_at=time.time(),
        preregistered=True,
    )
    await save_client(store, server_name, registration)
