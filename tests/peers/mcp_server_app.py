"""A real MCP server (the `mcp` SDK's MCPServer over streamable HTTP) guarded by an API key or OAuth.

Run:  python tests/peers/mcp_server_app.py [--port 0] MODE
  API key:  --api-key-header X-API-Key      (key in $MCP_PEER_API_KEY, or --api-key KEY)
            A header named Authorization means "Authorization: Bearer KEY".
            A missing or wrong key is answered 401 with no OAuth challenge.
  OAuth:    --introspect ISSUER --client-id ID   (secret in $MCP_PEER_CLIENT_SECRET, or --client-secret)
            [--scopes "mcp:read mcp:write"] [--resource URL]
            A resource server per the MCP authorization spec, built from the SDK's own AuthSettings:
            401 + `WWW-Authenticate: Bearer ... resource_metadata="<url>"` without a valid token, and
            RFC 9728 metadata at /.well-known/oauth-protected-resource/mcp naming ISSUER and the scopes.
            Every request introspects the token at ISSUER (no cache: revocation and expiry show at once)
            and accepts it only when active and its `aud` is this server's resource URL.

The process binds 127.0.0.1:PORT itself before it builds the app, so the resource URL carries the
real port (no bind-close-rebind race); --resource overrides it (to test a resource mismatch).
When serving it prints one line: {"url": ".../mcp", "port": N, "resource": ... | null}.
It exits when stdin closes, or on SIGTERM/SIGINT.

  --require-header NAME=VALUE   also answer 400 without this header (repeatable): a non-secret header the
                    server needs beside its key (a region, a tenant)
  --transport sse   the legacy HTTP+SSE transport (the SDK's sse_app: GET /sse, POST /messages/) instead
                    of Streamable HTTP at /mcp; the ready line's url is then the /sse URL.
  --public-host NAME --tls-cert PEM --tls-key PEM
                    served as https://NAME:PORT/mcp (a CH_TEST_HOSTS name: tests/peers/mapped_hosts.py, which
                    the introspection requests resolve too), for traffic that must go through a proxy.
  --era legacy|modern   the SDK serves both protocol eras (the `initialize` handshake, and 2026-07-28's
                    `server/discover` with the version in every request); `legacy` answers a 2026-07-28 request
                    as a 2025 server does (400, no session), `modern` answers a handshake-era request as a
                    2026-07-28-only server does (-32022, its supported versions).

Tools: echo(text) -> text; whoami() -> the token's subject ("api-key" in API-key mode);
token_id() -> a short hash of the credential this call carried (tells tokens apart without showing them);
progress_then_wait(key) -> sends a progress notification, then waits (up to 60 s) for release(key);
ask_name() -> elicits {"name"} from the client and greets it; sample(prompt) -> asks the client's model
(sampling) and returns its text; live_sessions() -> how many Streamable HTTP sessions the server holds;
announce() -> tells `subscriptions/listen` streams that the tool list changed (2026-07-28).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
from typing import Any

import aiohttp
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent
from pydantic import AnyHttpUrl, BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

try:  # as a module of the test suite, or run as a script from tests/peers
    from tests.peers.mapped_hosts import connector as mapped_connector
except ImportError:
    from mapped_hosts import connector as mapped_connector  # type: ignore[no-redef]

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
RELEASES: dict[str, asyncio.Event] = {}  # progress_then_wait(key) waits for release(key)


class Name(BaseModel):
    name: str


INTROSPECTION_TIMEOUT = aiohttp.ClientTimeout(total=10)


class IntrospectionTokenVerifier:
    """The SDK's TokenVerifier, backed by RFC 7662 introspection at the authorization server."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, resource: str) -> None:
        self._issuer = issuer.rstrip("/")
        self._auth = {"Authorization": aiohttp.encode_basic_auth(client_id, client_secret)}
        self._resource = resource
        self._endpoint: str | None = None

    async def _introspection_endpoint(self, http: aiohttp.ClientSession) -> str:
        if self._endpoint is None:
            url = f"{self._issuer}/.well-known/oauth-authorization-server"
            async with http.get(url) as response:
                response.raise_for_status()
                self._endpoint = str((await response.json())["introspection_endpoint"])
        return self._endpoint

    async def verify_token(self, token: str) -> AccessToken | None:
        # force_close: the Node server drops idle keep-alive connections after 5 s.
        connector = mapped_connector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=INTROSPECTION_TIMEOUT) as http:
            endpoint = await self._introspection_endpoint(http)
            async with http.post(endpoint, data={"token": token}, headers=self._auth) as response:
                if response.status != 200:
                    return None
                claims: dict[str, Any] = await response.json()
        if not claims.get("active") or claims.get("token_type") not in (None, "Bearer"):
            return None
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if self._resource not in audiences:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=claims.get("exp"),
            resource=self._resource,
            subject=claims.get("sub"),
            claims={"iss": claims.get("iss")},
        )


MODERN_VERSIONS = {"2026-07-28"}


class EraMiddleware:
    """One protocol era only: `legacy` refuses 2026-07-28 requests as a 2025 server does (400: no session),
    `modern` refuses handshake-era ones as a 2026-07-28-only server does (-32022 with its versions)."""

    def __init__(self, app: ASGIApp, era: str) -> None:
        self._app = app
        self._era = era

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            version = next((v.decode() for k, v in scope["headers"] if k == b"mcp-protocol-version"), None)
            modern = version in MODERN_VERSIONS
            if self._era == "legacy" and modern:
                error = {"code": -32000, "message": "Bad Request: No valid session ID provided"}
                return await _send_json(send, 400, {"jsonrpc": "2.0", "id": None, "error": error})
            if self._era == "modern" and not modern:
                data = {"supported": sorted(MODERN_VERSIONS), "requested": version}
                error = {"code": -32022, "message": "Unsupported protocol version", "data": data}
                return await _send_json(send, 400, {"jsonrpc": "2.0", "id": None, "error": error})
        await self._app(scope, receive, send)


async def _send_json(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequiredHeadersMiddleware:
    """Answers 400 unless the request carries each of `required` (name -> value): a server that needs a
    non-secret header (a region, a tenant) as well as its key."""

    def __init__(self, app: ASGIApp, required: dict[str, str]) -> None:
        self._app = app
        self._required = {name.lower().encode(): value.encode() for name, value in required.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            presented = dict(scope["headers"])
            if any(presented.get(name) != value for name, value in self._required.items()):
                error = {"error": "invalid_request", "error_description": "a required header is missing"}
                return await _send_json(send, 400, error)
        await self._app(scope, receive, send)


class ApiKeyMiddleware:
    """Answers 401 unless the request carries the key in the configured header."""

    def __init__(self, app: ASGIApp, header: str, key: str) -> None:
        self._app = app
        self._header = header.lower().encode()
        bearer = header.lower() == "authorization"
        self._expected = (f"Bearer {key}" if bearer else key).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            presented = next((value for name, value in scope["headers"] if name == self._header), b"")
            if not hmac.compare_digest(presented, self._expected):
                body = b'{"error": "unauthorized", "error_description": "missing or wrong API key"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


def build_server(auth: AuthSettings | None, verifier: IntrospectionTokenVerifier | None) -> MCPServer:
    server = MCPServer(name="context-harness-test-peer", auth=auth, token_verifier=verifier)

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami() -> str:
        """The subject of the access token this call was made with."""
        token = get_access_token()
        return (token.subject or token.client_id) if token is not None else "api-key"

    @server.tool()
    def token_id() -> str:
        """A short hash of the access token this call carried ("api-key" in API-key mode)."""
        token = get_access_token()
        return hashlib.sha256(token.token.encode()).hexdigest()[:12] if token is not None else "api-key"

    @server.tool()
    async def progress_then_wait(key: str, ctx: Context) -> str:
        """Report progress, then wait until release(key) is called."""
        released = RELEASES.setdefault(key, asyncio.Event())
        await ctx.report_progress(1, 2, "waiting for release")
        await asyncio.wait_for(released.wait(), 60)
        return "released"

    @server.tool()
    def release(key: str) -> str:
        """Let progress_then_wait(key) finish."""
        RELEASES.setdefault(key, asyncio.Event()).set()
        return "ok"

    @server.tool()
    async def ask_name(ctx: Context) -> str:
        """Ask the client for a name (elicitation)."""
        answer = await ctx.elicit("What is your name?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" else answer.action

    @server.tool()
    async def sample(prompt: str, ctx: Context) -> str:
        """Ask the client's model (sampling)."""
        message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
        result = await ctx.session.create_message([message], max_tokens=20, related_request_id=ctx.request_id)
        content = result.content
        return content.text if isinstance(content, TextContent) else "?"

    @server.tool()
    async def announce(ctx: Context) -> str:
        """Tell `subscriptions/listen` streams that the tool list changed."""
        await ctx.notify_tools_changed()
        return "announced"

    @server.tool()
    def live_sessions() -> int:
        """How many Streamable HTTP sessions this server holds."""
        return len(server.session_manager._server_instances)

    return server


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key-header")
    parser.add_argument("--api-key", default=os.environ.get("MCP_PEER_API_KEY"))
    parser.add_argument("--introspect", metavar="ISSUER")
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret", default=os.environ.get("MCP_PEER_CLIENT_SECRET"))
    parser.add_argument("--scopes", default="mcp:read mcp:write", help="required scopes, also scopes_supported")
    parser.add_argument("--resource", help="resource URL to advertise and require (default: this /mcp URL)")
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    parser.add_argument(
        "--require-header", action="append", default=[], metavar="NAME=VALUE", help="400 without it (repeatable)"
    )
    parser.add_argument("--public-host", default="127.0.0.1", help="the host in its URL (a CH_TEST_HOSTS name)")
    parser.add_argument("--tls-cert", help="PEM chain: serve https with it (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--era", choices=["both", "legacy", "modern"], default="both")
    args = parser.parse_args(argv)
    if bool(args.api_key_header) == bool(args.introspect):
        parser.error("give exactly one of --api-key-header or --introspect")
    if args.api_key_header and not args.api_key:
        parser.error("--api-key-header needs a key ($MCP_PEER_API_KEY or --api-key)")
    if args.introspect and not (args.client_id and args.client_secret):
        parser.error("--introspect needs --client-id and a secret ($MCP_PEER_CLIENT_SECRET or --client-secret)")
    return args


def build_app(args: argparse.Namespace, url: str) -> tuple[ASGIApp, str | None]:
    app, resource = _build_app(args, url)
    return (app if args.era == "both" else EraMiddleware(app, args.era)), resource


def _build_app(args: argparse.Namespace, url: str) -> tuple[ASGIApp, str | None]:
    if args.api_key_header:
        server = build_server(None, None)
        if args.transport == "sse":
            app = server.sse_app(sse_path=SSE_PATH)
        else:
            app = server.streamable_http_app(streamable_http_path=MCP_PATH)
        required = dict(item.split("=", 1) for item in args.require_header)
        return RequiredHeadersMiddleware(ApiKeyMiddleware(app, args.api_key_header, args.api_key), required), None
    resource = args.resource or url
    scopes = args.scopes.split()
    auth = AuthSettings(
        issuer_url=args.introspect,
        resource_server_url=AnyHttpUrl(resource),
        required_scopes=scopes,
        validate_token_resource=True,
    )
    verifier = IntrospectionTokenVerifier(args.introspect, args.client_id, args.client_secret, resource)
    # The SDK guards against DNS rebinding for a server on 127.0.0.1; one named otherwise answers to that name.
    app = build_server(auth, verifier).streamable_http_app(streamable_http_path=MCP_PATH, host=args.public_host)
    return app, resource


def exit_when_stdin_closes(server: uvicorn.Server, loop: asyncio.AbstractEventLoop) -> None:
    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    threading.Thread(target=watch, daemon=True).start()


async def serve(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    scheme = "https" if args.tls_cert else "http"
    url = f"{scheme}://{args.public_host}:{port}{SSE_PATH if args.transport == 'sse' else MCP_PATH}"
    app, resource = build_app(args, url)
    tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key} if args.tls_cert else {}
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on", **tls)
    server = uvicorn.Server(config)
    exit_when_stdin_closes(server, asyncio.get_running_loop())
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # startup failed: raise its error
            return
        await asyncio.sleep(0.02)  # inside the peer, not test synchronisation: uvicorn has no started event
    print(json.dumps({"url": url, "port": port, "resource": resource}), flush=True)
    await serving


def main() -> None:
    asyncio.run(serve(parse_args(sys.argv[1:])))


if __name__ == "__main__":
    main()
