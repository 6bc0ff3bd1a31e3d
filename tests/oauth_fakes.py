"""Fault-injecting OAuth peers for tests: an MCP resource server plus authorization server in one
aiohttp app, a scripted token endpoint for refresh outcomes, and a raw socket server that closes the
connection mid-response. All listen on 127.0.0.1 port 0 and remember every secret they hand out, so
tests can assert none of them leaks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class FakeWorld:
    """Knobs that make the fake servers misbehave in one specific way each."""

    issuer_override: str | None = None  # metadata names another issuer
    challenge_methods: list[str] = field(default_factory=lambda: ["S256"])
    advertise_iss: bool = True  # authorization_response_iss_parameter_supported
    send_iss: bool = True
    wrong_iss: bool = False
    tamper_state: bool = False
    deny: bool = False
    registration_status: int = 201
    registration_endpoint: bool = True
    token_status: int = 200
    token_delay_s: float = 0.0
    challenge_header: bool = True
    resource_override: str | None = None
    access_token_lifetime: float | None = 3600
    access_token_value: str | None = None  # issue this (hostile) access token instead of a random one
    token_scope: str | None = None  # the token response's `scope`
    client_id_metadata_documents: bool = False  # advertise client_id_metadata_document_supported
    challenge_resource_metadata: str | None = None  # the 401 challenge points here instead
    resource_overrides: dict[str, Any] = field(default_factory=dict)  # merged into the resource metadata
    metadata_overrides: dict[str, Any] = field(default_factory=dict)  # merged into the AS metadata
    # Real servers' client checks: unknown clients get an error page at /authorize (no redirect, as RFC 6749
    # §4.1.2.1 demands) and `invalid_client` at /token.
    strict_clients: bool = False
    exact_redirects: bool = False  # /authorize refuses a redirect_uri the client did not register
    token_forgets_clients: bool = False  # /token answers invalid_client although /authorize knew the client
    preregistered: dict[str, list[str]] = field(default_factory=dict)  # client id -> its redirect URIs
    # How /token wants a client secret: "client_secret_post" (FastMCP: Basic is invalid_client) or
    # "client_secret_basic" (the secret in the form is invalid_client); None: takes anything.
    secret_method: str | None = None
    token_error: str | None = None  # /token answers this OAuth error (400) to every authenticated request
    # Dynamic registration answers every client with a secret and this method, whatever the client asked for
    # (RFC 7591 §3.2.1: the response is what is registered); /token and /revoke then refuse (401 invalid_client)
    # a registered client that does not send that secret exactly that way.
    registered_secret_method: str | None = None
    forgotten: set[str] = field(default_factory=set)  # registered clients the server lost (a restart)

    # What happened (secrets included, so tests can look for them in logs).
    base: str = ""
    issued_codes: list[str] = field(default_factory=list)
    redeemed_codes: list[str] = field(default_factory=list)
    verifiers: list[str] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    token_auth_headers: list[str | None] = field(default_factory=list)
    authorize_params: list[dict[str, str]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    issued_tokens: list[str] = field(default_factory=list)
    client_secrets: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)  # tokens sent to /revoke
    revocation_forms: list[dict[str, str]] = field(default_factory=list)
    revocation_auth_headers: list[str | None] = field(default_factory=list)
    registered_secrets: dict[str, str] = field(default_factory=dict)  # client id -> the secret registration gave
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def issuer(self) -> str:
        return self.base + "/as"

    @property
    def server_url(self) -> str:
        return self.base + "/mcp"

    def forget_clients(self) -> None:
        """The server restarts with an in-memory client store: every registered client is gone."""
        self.forgotten.update(f"client-{n}" for n in range(1, len(self.registrations) + 1))

    def redirect_uris_of(self, client_id: str) -> list[str] | None:
        """The client's registered redirect URIs; None for a client this server does not know."""
        if client_id in self.preregistered:
            return self.preregistered[client_id]
        if client_id.startswith("client-") and client_id not in self.forgotten:
            n = int(client_id.removeprefix("client-"))
            if 1 <= n <= len(self.registrations):
                return list(self.registrations[n - 1].get("redirect_uris", []))
        return None

    def secrets(self) -> list[str]:
        return [*self.issued_codes, *self.verifiers, *self.issued_tokens, *self.client_secrets]

    def client_authenticated(self, form: dict[str, str], basic: str | None) -> bool:
        """Whether a request of a client registered with a secret carries that secret, the registered way (a
        client registered without one passes)."""
        if basic is not None and basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            used = "client_secret_basic"
        else:
            client_id, secret, used = form.get("client_id", ""), form.get("client_secret", ""), "client_secret_post"
        wanted = self.registered_secrets.get(client_id)
        if wanted is None:
            return True
        return used == self.registered_secret_method and secrets.compare_digest(secret, wanted)


def build_world_app(world: FakeWorld) -> web.Application:
    challenges: dict[str, str] = {}  # code -> S256 challenge

    async def mcp(request: web.Request) -> web.Response:
        headers = {}
        if world.challenge_header:
            metadata_url = world.challenge_resource_metadata or f"{world.base}/.well-known/oauth-protected-resource/mcp"
            headers["WWW-Authenticate"] = (
                f'Bearer realm="fake", error="invalid_token", resource_metadata="{metadata_url}", scope="mcp:read"'
            )
        return web.json_response({"error": "unauthorized"}, status=401, headers=headers)

    async def resource_metadata(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "resource": world.resource_override or world.server_url,
                "authorization_servers": [world.issuer],
                "scopes_supported": ["mcp:read", "mcp:write"],
                **world.resource_overrides,
            }
        )

    async def as_metadata(request: web.Request) -> web.Response:
        doc: dict[str, Any] = {
            "issuer": world.issuer_override or world.issuer,
            "authorization_endpoint": world.issuer + "/authorize",
            "token_endpoint": world.issuer + "/token",
            "revocation_endpoint": world.issuer + "/revoke",
            "scopes_supported": ["openid", "mcp:read", "mcp:write", "offline_access"],
            "code_challenge_methods_supported": world.challenge_methods,
            "authorization_response_iss_parameter_supported": world.advertise_iss,
        }
        if world.registration_endpoint:
            doc["registration_endpoint"] = world.issuer + "/register"
        if world.client_id_metadata_documents:
            doc["client_id_metadata_document_supported"] = True
        return web.json_response({**doc, **world.metadata_overrides})

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        world.registrations.append(body)
        if world.registration_status >= 400:
            return web.json_response(
                {"error": "invalid_redirect_uri", "error_description": "redirect not allowed"},
                status=world.registration_status,
            )
        answer = {**body, "client_id": f"client-{len(world.registrations)}", "client_id_issued_at": 0}
        if world.registered_secret_method is not None:
            secret = secrets.token_urlsafe(24)
            world.client_secrets.append(secret)
            world.registered_secrets[answer["client_id"]] = secret
            answer.update(
                client_secret=secret,
                client_secret_expires_at=0,
                token_endpoint_auth_method=world.registered_secret_method,
            )
        return web.json_response(answer, status=201)

    async def authorize(request: web.Request) -> web.Response:
        params = dict(request.query)
        world.authorize_params.append(params)
        if world.strict_clients:
            known = world.redirect_uris_of(params.get("client_id", ""))
            if known is None:
                return web.Response(status=400, text="<h1>Error</h1><p>Invalid client_id</p>", content_type="text/html")
            if world.exact_redirects and known and params.get("redirect_uri") not in known:
                return web.Response(status=400, text="<p>Unregistered redirect_uri</p>", content_type="text/html")
        back: dict[str, str] = {"state": params["state"] + ("x" if world.tamper_state else "")}
        if world.deny:
            back.update(error="access_denied", error_description="The user said no")
        else:
            code = secrets.token_urlsafe(24)
            world.issued_codes.append(code)
            challenges[code] = params["code_challenge"]
            back["code"] = code
        if world.send_iss:
            back["iss"] = world.issuer + ("/evil" if world.wrong_iss else "")
        raise web.HTTPFound(params["redirect_uri"] + "?" + urlencode(back))

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        world.token_forms.append(form)
        basic = request.headers.get("Authorization")
        world.token_auth_headers.append(basic)
        if (
            (world.secret_method == "client_secret_post" and (basic or "client_secret" not in form))
            or (world.secret_method == "client_secret_basic" and (not basic or "client_secret" in form))
            or not world.client_authenticated(form, basic)
        ):
            return web.json_response({"error": "invalid_client", "error_description": "wrong client auth"}, status=401)
        if world.token_error:
            return web.json_response({"error": world.token_error}, status=400)
        if world.token_delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(world.release.wait(), world.token_delay_s)
        if world.token_status != 200:
            return web.json_response({"error": "server_error"}, status=world.token_status)
        if world.token_forgets_clients or (
            world.strict_clients and world.redirect_uris_of(form.get("client_id", "")) is None
        ):
            return web.json_response({"error": "invalid_client", "error_description": "Client not found"}, status=401)
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in world.issued_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            return issue_tokens()
        code = form.get("code", "")
        verifier = form.get("code_verifier", "")
        world.verifiers.append(verifier)
        if code not in challenges or code in world.redeemed_codes or _s256(verifier) != challenges[code]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        world.redeemed_codes.append(code)
        return issue_tokens()

    def issue_tokens() -> web.Response:
        access, refresh = world.access_token_value or secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        world.issued_tokens += [access, refresh]
        doc: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "refresh_token": refresh}
        if world.access_token_lifetime is not None:
            doc["expires_in"] = world.access_token_lifetime
        if world.token_scope is not None:
            doc["scope"] = world.token_scope
        return web.json_response(doc)

    async def revoke(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        world.revocation_forms.append(form)
        world.revocation_auth_headers.append(request.headers.get("Authorization"))
        if not world.client_authenticated(form, request.headers.get("Authorization")):
            return web.json_response({"error": "invalid_client"}, status=401)
        world.revoked.append(form.get("token", ""))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/as/revoke", revoke)
    app.router.add_post("/mcp", mcp)
    app.router.add_get("/.well-known/oauth-protected-resource/mcp", resource_metadata)
    app.router.add_get("/.well-known/oauth-authorization-server/as", as_metadata)
    app.router.add_post("/as/register", register)
    app.router.add_get("/as/authorize", authorize)
    app.router.add_post("/as/token", token)
    return app


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1:0 (TLS with `ssl_context`); yields its base URL, naming `host`; stops it on exit."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_world(
    world: FakeWorld, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[FakeWorld]:
    async with serve(build_world_app(world), ssl_context, host) as base:
        world.base = base
        try:
            yield world
        finally:
            world.release.set()


@dataclass
class BrowserVisit:
    """What the fake browser saw at the callback listener."""

    status: int
    text: str


def browser(times: int = 1) -> tuple[Callable[[str], None], asyncio.Future[list[BrowserVisit]]]:
    """An `on_authorization_url` that plays the user: follow the AS's redirect to our callback
    (`times` times: 2 = the user reloads the callback page). Returns the handler and a future with
    the visits."""
    loop = asyncio.get_running_loop()
    visits: asyncio.Future[list[BrowserVisit]] = loop.create_future()

    async def visit(url: str) -> None:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, allow_redirects=False) as resp:
                    location = resp.headers["Location"]
                seen = []
                for _ in range(times):
                    async with session.get(location, allow_redirects=False) as resp:
                        seen.append(BrowserVisit(resp.status, await resp.text()))
            visits.set_result(seen)
        except Exception as exc:  # surfaced to the test through the future
            visits.set_exception(exc)

    tasks: set[asyncio.Task[None]] = set()

    def on_url(url: str) -> None:
        task = loop.create_task(visit(url))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_url, visits


# --- refresh endpoint --------------------------------------------------------------------------------

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedTokenEndpoint:
    """A token endpoint that answers the n-th request with `script[n]` (the last one repeats)."""

    script: list[Behaviour]
    forms: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.forms.append({k: str(v) for k, v in (await request.post()).items()})
            self.auth_headers.append(request.headers.get("Authorization"))
            behaviour = self.script[min(len(self.forms) - 1, len(self.script) - 1)]
            return await behaviour(request)

        app = web.Application()
        app.router.add_post("/token", handle)
        app.router.add_post("/revoke", handle)
        return app


def respond(status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Behaviour:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.json_response(body or {}, status=status, headers=headers)

    return behaviour


def hang(endpoint: ScriptedTokenEndpoint, seconds: float = 10.0) -> Behaviour:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(endpoint.release.wait(), seconds)
        return web.json_response({}, status=503)

    return behaviour


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one HTTP request (head and body); False when the client went away first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    if length:
        await reader.readexactly(length)
    return True


@contextlib.asynccontextmanager
async def half_response_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP server that sends headers and part of a JSON body, then closes the connection.
    Yields its base URL and a one-element list counting requests."""
    count = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await _read_request(reader):
            writer.close()
            return
        count[0] += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
        writer.write(json.dumps({"access_token": "partial"}).encode()[:10])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", count
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def keepalive_dropping_server(body: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """Answers the first request on each connection with keep-alive, then closes the connection
    when a second request arrives on it, unanswered: what a client sees when it reuses a pooled
    connection that a Node server has just closed for idleness. Yields base URL and request count."""
    count = [0]

    async def read_request(reader: asyncio.StreamReader) -> bool:
        if not await _read_request(reader):
            return False
        count[0] += 1
        return True

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            await read_request(reader)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", count
    finally:
        server.close()
        await server.wait_closed()


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))
