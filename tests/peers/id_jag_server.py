"""An MCP server's authorization server for enterprise-managed authorization (SEP-990 §5): it takes an ID-JAG from
a company identity provider with the JWT-bearer grant (RFC 7523) and issues access tokens the MCP server introspects.

Run:  python tests/peers/id_jag_server.py --idp ISSUER --client-id ID [--token-ttl 4] [--port 0]
      (the client's secret in $ID_JAG_CLIENT_SECRET; the resource server's in $ID_JAG_INTROSPECTION_SECRET)

- `/.well-known/oauth-authorization-server`: issuer, token and introspection endpoints, the jwt-bearer grant,
  client_secret_basic; no authorization endpoint (there is no browser login here).
- `POST /token`: client_secret_basic for the one client; `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`;
  the assertion is checked as SEP-990 §5.1 says: header `typ` oauth-id-jag+jwt, the signature against the IdP's
  JWKS (read from its metadata), `iss` the IdP, `aud` this issuer, unexpired, `client_id` the authenticated client,
  a `resource` on 127.0.0.1. The access token is opaque, for that resource, lasting --token-ttl seconds.
- `POST /introspect` (RFC 7662, Basic auth of the resource server `mcp-resource-server`): active, aud, sub, exp.

It prints one line when listening: {"issuer": "http://127.0.0.1:<port>", "port": <port>}, logs each grant's outcome
(never a token) to stderr, and exits when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_TYP = "oauth-id-jag+jwt"
INTROSPECTION_CLIENT_ID = "mcp-resource-server"


@dataclass
class Issued:
    resource: str
    subject: str
    client_id: str
    expires_at: float


class IdJagServer:
    def __init__(self, issuer: str, idp: str, client: tuple[str, str], introspection_secret: str, ttl: int) -> None:
        self.issuer, self.idp, self.client, self.ttl = issuer, idp.rstrip("/"), client, ttl
        self.introspection = (INTROSPECTION_CLIENT_ID, introspection_secret)
        self.tokens: dict[str, Issued] = {}
        self._jwks: jwt.PyJWKClient | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/oauth-authorization-server", self.metadata)
        app.router.add_post("/token", self.token)
        app.router.add_post("/introspect", self.introspect)
        return app

    async def metadata(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "token_endpoint": f"{self.issuer}/token",
                "introspection_endpoint": f"{self.issuer}/introspect",
                "grant_types_supported": [JWT_BEARER],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        if basic_auth(request) != self.client:
            return refuse("invalid_client", "client authentication failed", 401)
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return refuse("unsupported_grant_type", "only the jwt-bearer grant")
        try:
            claims = await asyncio.to_thread(self.verified, str(form.get("assertion", "")))
        except jwt.PyJWTError as error:
            log("grant_refused", reason=type(error).__name__)
            return refuse("invalid_grant", f"the ID-JAG does not verify: {type(error).__name__}")
        if claims.get("client_id") != self.client[0]:
            return refuse("invalid_grant", "the ID-JAG names another client")
        resource = claims.get("resource")
        if not isinstance(resource, str) or not resource.startswith("http://127.0.0.1:"):
            return refuse("invalid_grant", "the ID-JAG names no resource here")
        value = secrets.token_urlsafe(24)
        self.tokens[value] = Issued(resource, str(claims["sub"]), self.client[0], time.time() + self.ttl)
        log("grant_issued", subject=claims["sub"])
        return web.json_response({"access_token": value, "token_type": "Bearer", "expires_in": self.ttl})

    def verified(self, assertion: str) -> dict[str, Any]:
        if jwt.get_unverified_header(assertion).get("typ") != ID_JAG_TYP:
            raise jwt.InvalidTokenError("typ")
        if self._jwks is None:
            self._jwks = jwt.PyJWKClient(self.jwks_uri())
        key = self._jwks.get_signing_key_from_jwt(assertion)
        claims: dict[str, Any] = jwt.decode(
            assertion, key.key, algorithms=["RS256", "ES256"], audience=self.issuer, issuer=self.idp
        )
        return claims

    def jwks_uri(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"{self.idp}/.well-known/openid-configuration", timeout=10) as answer:
            return str(json.load(answer)["jwks_uri"])

    async def introspect(self, request: web.Request) -> web.Response:
        if basic_auth(request) != self.introspection:
            return refuse("invalid_client", "client authentication failed", 401)
        issued = self.tokens.get(str((await request.post()).get("token", "")))
        if issued is None or issued.expires_at <= time.time():
            return web.json_response({"active": False})
        return web.json_response(
            {
                "active": True,
                "aud": issued.resource,
                "sub": issued.subject,
                "client_id": issued.client_id,
                "exp": int(issued.expires_at),
                "token_type": "Bearer",
                "iss": self.issuer,
            }
        )


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    from urllib.parse import unquote

    return unquote(user), unquote(password)


def refuse(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


async def serve(args: argparse.Namespace) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", args.port))  # bound first: the issuer carries the real port
    port = listener.getsockname()[1]
    client = (args.client_id, os.environ["ID_JAG_CLIENT_SECRET"])
    secret = os.environ["ID_JAG_INTROSPECTION_SECRET"]
    server = IdJagServer(f"http://127.0.0.1:{port}", args.idp, client, secret, args.token_ttl)
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.SockSite(runner, listener).start()
    print(json.dumps({"issuer": server.issuer, "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idp", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
