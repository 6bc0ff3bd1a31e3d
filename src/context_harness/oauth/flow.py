"""One complete OAuth login for one MCP server (docs/design.md, "Logging in"), tokens in hand.

The flow writes nothing but a successful client registration; storing the tokens (rotated refresh
tokens first) and writing headers is the caller's job, so a failure anywhere leaves no half-written state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.oauth.authorization_request import build_authorization_url, parse_callback
from context_harness.oauth.callback_server import CallbackServer, query_from_pasted_url
from context_harness.oauth.discovery import AuthServerMetadata, Discovery, discover, discover_issuer
from context_harness.oauth.flow_client import (
    Client,
    RegisteredClients,
    accepted_client,
    cannot_register,
    explicit_auth_method,
    forget_client,
    refused,
    remember_given_client,
)
from context_harness.oauth.pkce import generate_pkce, new_state
from context_harness.oauth.preflight import CLIENT_ERRORS
from context_harness.oauth.registration import (
    RegistrationLimit,
    registered_loopback_port,
)
from context_harness.oauth.token_auth import either_way
from context_harness.oauth.token_client import exchange_code
from context_harness.primitives.oauth import ClientRegistration, OAuthTokens
from context_harness.primitives.outside_values import Markers
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

log = structlog.get_logger(__name__)

DEFAULT_FLOW_TIMEOUT_S = 300.0

AuthorizationUrlHandler = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class FlowRequest:
    """One login asked for: which server, with which client, and how long each step may take."""

    server_name: str
    server_url: str
    # Every agent's substitution markers (`config.format.substitutions()`): an issued token holding one is refused.
    markers: Markers
    # A pre-registered client, already resolved by the caller from flags, env vars or the registry; without
    # one a stored registration for this issuer is reused, else one is made by Dynamic Client Registration.
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    # How that client authenticates at the token endpoint; None: "none" without a secret, else Basic unless
    # the server only takes the secret in the form.
    token_auth_method: str | None = None
    # The scopes to ask for instead of the discovered ones.
    scopes: Sequence[str] | None = None
    # The callback listener's port: 0 for any free one.
    port: int = 0
    # How long the person has to finish in the browser.
    timeout_s: float = DEFAULT_FLOW_TIMEOUT_S
    # Each HTTP request to the servers.
    http_timeout_s: float = http.DEFAULT_TIMEOUT_S
    # The https URL of our Client ID Metadata Document: the client id where the server advertises support
    # (before any registration).
    client_metadata_url: str | None = None
    # The daemon's limit on new registrations per issuer, shared by every login (None: no limit).
    registrations: RegistrationLimit | None = field(default=None, compare=False)
    # Sign in at this OpenID provider itself (a company identity provider) instead of for an MCP server: its
    # metadata, no `resource`; the given client is not stored as a server's (`remember_client` off).
    issuer: str | None = None
    remember_client: bool = True


@dataclass(frozen=True, slots=True)
class AuthorizationGrant:
    """What a finished login yields: the tokens and everything a later refresh or logout needs."""

    tokens: OAuthTokens = field(repr=False)
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    client_id: str
    client_secret: str | None = field(repr=False)
    # How the client authenticates at the token endpoint ("none", "client_secret_basic", ...).
    token_endpoint_auth_method: str | None
    resource: str
    scopes: list[str]
    redirect_uri: str


async def _open_listener(port: int, stored: ClientRegistration | None) -> Result[CallbackServer]:
    """A listener on `port`; with no fixed port, first the port our stored registration names, so
    servers that match redirect URIs exactly still accept it."""
    if port == 0 and stored is not None:
        preferred = registered_loopback_port(stored)
        if preferred:
            server = CallbackServer(preferred)
            if isinstance(await server.start(), Success):
                return Success(server)
    server = CallbackServer(port)
    started = await server.start()
    if isinstance(started, Failure):
        return started
    return Success(server)


async def _feed_pastes(paste: asyncio.Queue[str], listener: CallbackServer) -> None:
    while True:
        text = await paste.get()
        parsed = query_from_pasted_url(text)
        if isinstance(parsed, Failure):
            log.info("pasted_redirect_ignored", reason=parsed.error)
            continue
        if listener.deliver(parsed.value):
            return
        log.info("pasted_redirect_ignored", reason="not this login's answer (state mismatch)")


async def _discover(session: aiohttp.ClientSession, request: FlowRequest) -> Result[Discovery]:
    """The server's authorization server, or the OpenID provider signed in to itself (`request.issuer`)."""
    if request.issuer is not None:
        return await discover_issuer(session, request.issuer, request.http_timeout_s)
    return await discover(session, request.server_url, request.http_timeout_s)


async def run_authorization_flow(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    *,
    client_store: RegisteredClients,
    on_authorization_url: AuthorizationUrlHandler,
    paste: asyncio.Queue[str] | None = None,
) -> Result[AuthorizationGrant]:
    """Log in as `request` says and return the tokens; never raises for an expected failure.

    `on_authorization_url` is called once with the URL the user must open. `paste`: strings put on this
    queue are read as pasted redirect URLs (headless login); the first of browser callback and paste wins.
    """
    server_name = request.server_name
    found = await _discover(session, request)
    if isinstance(found, Failure):
        return _failed(server_name, found)
    discovery = found.value
    auth_server = discovery.auth_server
    chosen_scopes = discovery.scopes(request.scopes)
    explicit, metadata_document = _given_client(request, auth_server)
    stored = None if explicit else client_store.get(server_name, auth_server.issuer)
    if explicit is None and stored is None and auth_server.registration_endpoint is None:
        return _failed(server_name, cannot_register(auth_server.issuer, server_name))

    opened = await _open_listener(request.port, stored)
    if isinstance(opened, Failure):
        return _failed(server_name, opened)
    listener = opened.value
    paste_task = asyncio.create_task(_feed_pastes(paste, listener)) if paste is not None else None
    try:
        result = await _authorize(
            session,
            request,
            discovery,
            client_store=client_store,
            stored=stored,
            listener=listener,
            explicit=explicit,
            scopes=chosen_scopes,
            on_authorization_url=on_authorization_url,
            remember_client=request.remember_client and not metadata_document,
        )
    finally:
        if paste_task is not None:
            paste_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await paste_task
        await listener.close()
    if isinstance(result, Failure):
        return _failed(server_name, result)
    log.info("authorization_flow_completed", server=server_name, issuer=auth_server.issuer, scopes=chosen_scopes)
    return result


def _given_client(request: FlowRequest, auth_server: AuthServerMetadata) -> tuple[Client | None, bool]:
    """The client given for this login (flags, environment, registry), else our Client ID Metadata Document's
    URL where the server takes one (True: nothing to register or remember); None: find or register one."""
    client_id, client_secret, metadata_document = request.client_id, request.client_secret, False
    if client_id is None and request.client_metadata_url and auth_server.client_id_metadata_document_supported:
        metadata_document = True
        client_id, client_secret = request.client_metadata_url, None  # the URL is the client id: nothing to register
        log.info("client_id_metadata_document_used", server=request.server_name, issuer=auth_server.issuer)
    if not client_id:
        return None, metadata_document
    auth_method = explicit_auth_method(client_secret, auth_server, request.token_auth_method)
    return Client(client_id, client_secret, auth_method), metadata_document


async def _authorize(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    discovery: Discovery,
    *,
    client_store: RegisteredClients,
    stored: ClientRegistration | None,
    listener: CallbackServer,
    explicit: Client | None,
    scopes: list[str],
    on_authorization_url: AuthorizationUrlHandler,
    remember_client: bool,
) -> Result[AuthorizationGrant]:
    server_name, auth_server, redirect_uri = request.server_name, discovery.auth_server, listener.redirect_uri
    pkce, state = generate_pkce(), new_state()

    def authorization_url(client_id: str) -> str:
        endpoint, resource = auth_server.authorization_endpoint, discovery.resource
        return build_authorization_url(endpoint, client_id, redirect_uri, scopes, state, pkce.challenge, resource)

    checked = await accepted_client(
        session,
        request.server_name,
        discovery,
        client_store,
        stored,
        explicit,
        redirect_uri,
        scopes,
        authorization_url,
        http_timeout_s=request.http_timeout_s,
        registrations=request.registrations,
    )
    if isinstance(checked, Failure):
        return checked
    client = checked.value
    listener.expected_state = state
    log.info("authorization_started", server=server_name, issuer=auth_server.issuer, port=listener.port)
    shown = on_authorization_url(authorization_url(client.client_id))
    if inspect.isawaitable(shown):
        await shown

    code = await _callback_code(listener, request, discovery, client_store, client, state)
    if isinstance(code, Failure):
        return code
    exchanged = await _exchange(
        session, request, discovery, client_store, client, code.value, pkce.verifier, redirect_uri
    )
    if isinstance(exchanged, Failure):
        listener.finish("Sign-in failed", exchanged.error)
        return exchanged
    tokens, client = exchanged.value
    if remember_client and client.source == "given":
        await remember_given_client(client_store, server_name, auth_server.issuer, client, redirect_uri)
    listener.finish("Signed in", f"context-harness is connected to {server_name}. You can close this tab.")
    return Success(_grant(discovery, client, tokens, scopes, redirect_uri))


def _grant(
    discovery: Discovery, client: Client, tokens: OAuthTokens, scopes: list[str], redirect_uri: str
) -> AuthorizationGrant:
    auth_server = discovery.auth_server
    return AuthorizationGrant(
        tokens=tokens,
        issuer=auth_server.issuer,
        token_endpoint=auth_server.token_endpoint,
        revocation_endpoint=auth_server.revocation_endpoint,
        client_id=client.client_id,
        client_secret=client.client_secret,
        token_endpoint_auth_method=client.auth_method,
        resource=discovery.resource,
        scopes=scopes,
        redirect_uri=redirect_uri,
    )


async def _callback_code(
    listener: CallbackServer,
    request: FlowRequest,
    discovery: Discovery,
    client_store: RegisteredClients,
    client: Client,
    state: str,
) -> Result[str]:
    """The authorization code the browser brings back (or a pasted redirect URL), checked."""
    server_name, auth_server = request.server_name, discovery.auth_server
    answered = await listener.wait(request.timeout_s)
    if isinstance(answered, Failure):
        return answered
    code = parse_callback(
        answered.value,
        state,
        auth_server.issuer,
        auth_server.authorization_response_iss_parameter_supported,
    )
    if isinstance(code, Failure):
        listener.finish("Sign-in failed", code.error)
        if answered.value.get("error") in CLIENT_ERRORS and code.code is ErrorCode.OAUTH_ERROR:
            await forget_client(client_store, server_name, client, "the authorization server refused it")
            return refused(server_name, auth_server.issuer, client, listener.redirect_uri, answered.value["error"])
    return code


async def _exchange(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    discovery: Discovery,
    client_store: RegisteredClients,
    client: Client,
    code: str,
    verifier: str,
    redirect_uri: str,
) -> Result[tuple[OAuthTokens, Client]]:
    """The code for tokens, either way of sending the secret; the client as it turned out to authenticate."""
    server_name, auth_server = request.server_name, discovery.auth_server
    tokens, auth_method = await either_way(
        lambda method: exchange_code(
            session,
            auth_server.token_endpoint,
            code=code,
            verifier=verifier,
            redirect_uri=redirect_uri,
            client_id=client.client_id,
            client_secret=client.client_secret,
            auth_method=method,
            resource=discovery.resource,
            revocation_endpoint=auth_server.revocation_endpoint,
            timeout_s=request.http_timeout_s,
            markers=request.markers,
        ),
        client.auth_method,
        client.client_secret,
        grant="code",
    )
    if isinstance(tokens, Success) and auth_method != client.auth_method:  # the other way worked: keep it
        client = replace(client, auth_method=auth_method)
        if client.source != "given" and auth_method is not None:
            client_store.remember_auth_method(server_name, client.client_id, auth_method)
    if isinstance(tokens, Failure):
        if tokens.code is ErrorCode.INVALID_CLIENT:
            await forget_client(client_store, server_name, client, "the token endpoint does not know it")
            hint = (
                f"check the client id and secret: `chctl auth {server_name} --client-id ID --client-secret -`"
                if client.source == "given"
                else f"run `chctl auth {server_name}` again: it registers a new client"
            )
            return Failure(tokens.error, tokens.code, hint)
        return tokens
    return Success((tokens.value, client))


def _failed(server_name: str, failure: Failure) -> Failure:
    """The failure, logged, and saying which server it is about (a person may be logging in to several)."""
    log.warning("authorization_flow_failed", server=server_name, code=failure.code.value, error=failure.error)
    if failure.error.startswith(server_name):
        return failure
    return Failure(f"{server_name}: {failure.error}", failure.code, failure.hint)
