"""One complete OAuth login for one MCP server (docs/design.md, "Logging in"), tokens in hand.

The flow writes nothing but a successful client registration; storing the tokens (rotated refresh
tokens first) and writing headers is the caller's job, so a failure anywhere leaves no half-written state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import structlog

from context_harness.oauth import http
from context_harness.oauth.authorization_request import build_authorization_url, parse_callback
from context_harness.oauth.callback_server import CallbackServer, query_from_pasted_url
from context_harness.oauth.discovery import AuthServerMetadata, Discovery, discover
from context_harness.oauth.pkce import generate_pkce, new_state
from context_harness.oauth.preflight import CLIENT_ERRORS, check_authorization_request
from context_harness.oauth.registration import (
    build_registration_request,
    redirect_fits,
    register_client,
    registered_loopback_port,
)
from context_harness.oauth.token_auth import either_way
from context_harness.oauth.token_client import exchange_code
from context_harness.primitives.oauth import ClientRegistration, OAuthTokens
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.stores.client_store import ClientStore

log = structlog.get_logger(__name__)

DEFAULT_FLOW_TIMEOUT_S = 300.0

AuthorizationUrlHandler = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class FlowRequest:
    """One login asked for: which server, with which client, and how long each step may take."""

    server_name: str
    server_url: str
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


@dataclass(frozen=True, slots=True)
class _Client:
    client_id: str
    client_secret: str | None
    auth_method: str | None
    # "given": --client-id, the registry or a metadata document; "stored": a registration on disk;
    # "registered": registered just now.
    source: str = "given"
    preregistered: bool = False


def _explicit_auth_method(secret: str | None, auth_server: AuthServerMetadata, chosen: str | None = None) -> str | None:
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


async def _resolve_client(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    discovery: Discovery,
    *,
    store: ClientStore,
    stored: ClientRegistration | None,
    redirect_uri: str,
    scopes: Sequence[str],
) -> Result[_Client]:
    """The client when none was given (flag, registry or metadata document): the stored registration if it
    fits, else one registered now (DCR).

    A client the user registered is used whatever the port (its app names the redirect URIs, not us); one
    we registered is reused only with the exact redirect URI it was registered with, since many servers
    match redirect URIs exactly: with another port we register again.
    """
    auth_server = discovery.auth_server
    if stored is not None and (stored.preregistered or redirect_fits(stored, redirect_uri, exact=True)):
        return Success(
            _Client(
                stored.client_id,
                stored.client_secret,
                stored.token_endpoint_auth_method,
                "stored",
                stored.preregistered,
            )
        )
    # No Client ID Metadata Document here (none configured, or the server takes none): DCR is what is left.
    if auth_server.registration_endpoint is None:
        return _cannot_register(auth_server.issuer)
    metadata = build_registration_request([redirect_uri], scopes)
    registered = await register_client(
        session, auth_server.registration_endpoint, metadata, auth_server.issuer, request.http_timeout_s
    )
    if isinstance(registered, Failure):
        return registered
    saved = _save_client(store, request.server_name, registered.value)
    if isinstance(saved, Failure):
        return saved
    reg = registered.value
    return Success(_Client(reg.client_id, reg.client_secret, reg.token_endpoint_auth_method, "registered"))


def _cannot_register(issuer: str) -> Failure:
    return Failure(
        f"{issuer} offers no dynamic client registration and no client id was given",
        ErrorCode.AUTH_REQUIRED,
        "register an OAuth app with the provider and pass --client-id (and --client-secret if issued)",
    )


def _save_client(store: ClientStore, server_name: str, registration: ClientRegistration) -> Result[None]:
    try:
        store.save(server_name, registration)
    except OSError as exc:
        return Failure(
            f"cannot save the client registration ({type(exc).__name__})",
            ErrorCode.PERMISSION_DENIED,
            f"check permissions of {store.directory}",
        )
    return Success(None)


def _forget_client(store: ClientStore, server_name: str, client: _Client, why: str) -> None:
    if client.source != "given" and store.forget(server_name, client.client_id):
        log.warning("client_registration_dropped", server=server_name, reason=why)


def _refused(server_name: str, issuer: str, client: _Client, redirect_uri: str, reason: str) -> Failure:
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
            "http://127.0.0.1/callback (any port), or the fixed one you pass with --port"
        )
        if client.preregistered:
            hint = f"the stored client was forgotten: run `chctl auth {server_name} --client-id ID`; " + hint
    else:
        hint = "register a client with the provider yourself and pass --client-id (and --client-secret)"
    return Failure(f"{what} ({reason})", ErrorCode.INVALID_CLIENT, hint)


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


async def run_authorization_flow(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    *,
    client_store: ClientStore,
    on_authorization_url: AuthorizationUrlHandler,
    paste: asyncio.Queue[str] | None = None,
) -> Result[AuthorizationGrant]:
    """Log in as `request` says and return the tokens; never raises for an expected failure.

    `on_authorization_url` is called once with the URL the user must open. `paste`: strings put on this
    queue are read as pasted redirect URLs (headless login); the first of browser callback and paste wins.
    """
    server_name = request.server_name
    found = await discover(session, request.server_url, request.http_timeout_s)
    if isinstance(found, Failure):
        return _failed(server_name, found)
    discovery = found.value
    auth_server = discovery.auth_server
    chosen_scopes = discovery.scopes(request.scopes)
    client_id, client_secret = request.client_id, request.client_secret
    metadata_document = False
    if client_id is None and request.client_metadata_url and auth_server.client_id_metadata_document_supported:
        metadata_document = True
        client_id, client_secret = request.client_metadata_url, None  # the URL is the client id: nothing to register
        log.info("client_id_metadata_document_used", server=server_name, issuer=auth_server.issuer)

    stored = None if client_id else client_store.get(server_name, auth_server.issuer)
    if client_id is None and stored is None and auth_server.registration_endpoint is None:
        return _failed(server_name, _cannot_register(auth_server.issuer))

    explicit = None
    if client_id:
        auth_method = _explicit_auth_method(client_secret, auth_server, request.token_auth_method)
        explicit = _Client(client_id, client_secret, auth_method)

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
            remember_client=not metadata_document,
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


async def _authorize(
    session: aiohttp.ClientSession,
    request: FlowRequest,
    discovery: Discovery,
    *,
    client_store: ClientStore,
    stored: ClientRegistration | None,
    listener: CallbackServer,
    explicit: _Client | None,
    scopes: list[str],
    on_authorization_url: AuthorizationUrlHandler,
    remember_client: bool,
) -> Result[AuthorizationGrant]:
    server_name = request.server_name
    auth_server = discovery.auth_server
    redirect_uri = listener.redirect_uri
    if explicit is not None:
        client = explicit
    else:
        resolved = await _resolve_client(
            session, request, discovery, store=client_store, stored=stored, redirect_uri=redirect_uri, scopes=scopes
        )
        if isinstance(resolved, Failure):
            return resolved
        client = resolved.value

    pkce, state = generate_pkce(), new_state()

    def authorization_url(client_id: str) -> str:
        return build_authorization_url(
            auth_server.authorization_endpoint,
            client_id,
            redirect_uri,
            scopes,
            state,
            pkce.challenge,
            discovery.resource,
        )

    url = authorization_url(client.client_id)
    # A client registered a moment ago is known; any other may have been forgotten, or may not allow our
    # redirect URI: ask before the person meets the server's error page.
    refused = None
    if client.source != "registered":
        refused = await check_authorization_request(session, url, redirect_uri, request.http_timeout_s)
    if refused is not None and client.source == "stored":
        # The server forgot the client we registered (restart, expiry, deletion): forget it too.
        _forget_client(client_store, server_name, client, "the authorization server refused it")
        if not client.preregistered and auth_server.registration_endpoint is not None:
            again = await _resolve_client(
                session, request, discovery, store=client_store, stored=None, redirect_uri=redirect_uri, scopes=scopes
            )
            if isinstance(again, Failure):
                return again
            stale, client = client, again.value
            url = authorization_url(client.client_id)
            refused = await check_authorization_request(session, url, redirect_uri, request.http_timeout_s)
            if refused is None:
                log.info("client_registered_again", server=server_name, dropped_client=stale.client_id)
    if refused is not None:
        return _refused(server_name, auth_server.issuer, client, redirect_uri, refused)
    listener.expected_state = state
    log.info("authorization_started", server=server_name, issuer=auth_server.issuer, port=listener.port)
    shown = on_authorization_url(url)
    if inspect.isawaitable(shown):
        await shown

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
            _forget_client(client_store, server_name, client, "the authorization server refused it")
            return _refused(server_name, auth_server.issuer, client, redirect_uri, answered.value["error"])
        return code
    tokens, auth_method = await either_way(
        lambda method: exchange_code(
            session,
            auth_server.token_endpoint,
            code=code.value,
            verifier=pkce.verifier,
            redirect_uri=redirect_uri,
            client_id=client.client_id,
            client_secret=client.client_secret,
            auth_method=method,
            resource=discovery.resource,
            revocation_endpoint=auth_server.revocation_endpoint,
            timeout_s=request.http_timeout_s,
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
        listener.finish("Sign-in failed", tokens.error)
        if tokens.code is ErrorCode.INVALID_CLIENT:
            _forget_client(client_store, server_name, client, "the token endpoint does not know it")
            hint = (
                "check --client-id and --client-secret"
                if client.source == "given"
                else f"run `chctl auth {server_name}` again: it registers a new client"
            )
            return Failure(tokens.error, tokens.code, hint)
        return tokens
    if remember_client and client.source == "given":
        # A client the user brought is remembered like a registered one, so a plain `chctl auth NAME` works next time.
        _save_client(
            client_store,
            server_name,
            ClientRegistration(
                issuer=auth_server.issuer,
                client_id=client.client_id,
                client_secret=client.client_secret,
                token_endpoint_auth_method=client.auth_method or "none",
                redirect_uris=[redirect_uri],
                registered_at=time.time(),
                preregistered=True,
            ),
        )
    listener.finish("Signed in", f"context-harness is connected to {server_name}. You can close this tab.")
    return Success(
        AuthorizationGrant(
            tokens=tokens.value,
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
    )


def _failed(server_name: str, failure: Failure) -> Failure:
    log.warning("authorization_flow_failed", server=server_name, code=failure.code.value, error=failure.error)
    return failure
