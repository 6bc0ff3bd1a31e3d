"""Cleartext and local-probe rules, as attacks by a *remote* MCP server.

The remote server is a fake world served over TLS as `https://mcp.remote.test:PORT` (a resolver maps the
name to 127.0.0.1 and the session trusts a throw-away certificate), so the daemon's code sees a remote
host. Its metadata points the daemon at an "internal" service on 127.0.0.1, which records every request.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from context_harness.config.format import substitutions
from context_harness.oauth.discovery import endpoint_allowed, is_local_host
from context_harness.oauth.flow import FlowRequest, run_authorization_flow
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.stores.client_store import ClientStore
from tests.oauth_fakes import FakeWorld, running_world, serve

REMOTE = "mcp.remote.test"


class MapResolver(AbstractResolver):
    """Resolves REMOTE to 127.0.0.1, nothing else; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host != REMOTE:
            raise OSError(f"no such host {host}")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={REMOTE}",
            "-addext",
            f"subjectAltName=DNS:{REMOTE}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
async def session(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[aiohttp.ClientSession, MapResolver]]:
    resolver = MapResolver()
    client_tls = ssl.create_default_context(cafile=str(certificate[0]))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, ssl=client_tls)) as s:
        yield s, resolver


@pytest.fixture
async def internal() -> AsyncIterator[tuple[str, list[str]]]:
    """A service on the user's machine that a remote server must not reach through us."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path}")
        return web.json_response({"issuer": "x", "resource": "x", "authorization_servers": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with serve(app) as base:
        yield base, hits


async def login(world: FakeWorld, session: aiohttp.ClientSession, tmp_path: Path) -> Any:
    return await run_authorization_flow(
        session,
        FlowRequest(server_name="remote", server_url=world.server_url, markers=substitutions(), timeout_s=0.5),
        client_store=ClientStore(tmp_path / "clients"),
        on_authorization_url=lambda url: None,  # nobody answers: a flow that gets this far times out
    )


async def test_the_tls_setup_reaches_the_browser_stage(
    session: tuple[aiohttp.ClientSession, MapResolver], server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    async with running_world(FakeWorld(), server_tls, REMOTE) as world:
        result = await login(world, session[0], tmp_path)
    assert isinstance(result, Failure) and result.code is ErrorCode.TIMEOUT, result  # the control case


@pytest.mark.parametrize(
    "hostile",
    [
        lambda internal: {"metadata_overrides": {"token_endpoint": internal + "/token"}},
        lambda internal: {"metadata_overrides": {"registration_endpoint": internal + "/register"}},
        lambda internal: {"metadata_overrides": {"revocation_endpoint": internal + "/revoke"}},
        lambda internal: {"resource_overrides": {"authorization_servers": [internal]}},
        lambda internal: {"metadata_overrides": {"registration_endpoint": "https://169.254.169.254/latest"}},
    ],
)
async def test_remote_metadata_pointing_at_this_machine_is_refused_before_any_request_to_it(
    session: tuple[aiohttp.ClientSession, MapResolver],
    server_tls: ssl.SSLContext,
    internal: tuple[str, list[str]],
    tmp_path: Path,
    hostile: Any,
) -> None:
    base, hits = internal
    async with running_world(FakeWorld(**hostile(base)), server_tls, REMOTE) as world:
        result = await login(world, session[0], tmp_path)
        assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR, result
        assert "this machine" in result.error
        assert world.registrations == [] and world.authorize_params == []
    assert hits == []


async def test_a_challenge_pointing_at_this_machine_is_ignored(
    session: tuple[aiohttp.ClientSession, MapResolver],
    server_tls: ssl.SSLContext,
    internal: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    base, hits = internal
    world = FakeWorld(challenge_resource_metadata=base + "/.well-known/oauth-protected-resource")
    async with running_world(world, server_tls, REMOTE):
        await login(world, session[0], tmp_path)
    assert hits == []


async def test_oauth_over_plain_http_to_a_remote_server_is_refused_before_any_request(
    session: tuple[aiohttp.ClientSession, MapResolver], tmp_path: Path
) -> None:
    client, resolver = session
    async with running_world(FakeWorld(), None, REMOTE) as world:
        result = await login(world, client, tmp_path)
        assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR, result
        assert "clear text" in result.error
        assert resolver.asked == [] and world.registrations == []


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080/x", True),
        ("http://127.1/x", True),
        ("http://0x7f.1/x", True),
        ("http://2130706433/x", True),
        ("https://localhost/x", True),
        ("https://api.localhost/x", True),
        ("https://[::1]/x", True),
        ("https://[::ffff:127.0.0.1]/x", True),
        ("https://169.254.169.254/latest", True),
        ("https://[fe80::1]/x", True),
        ("https://0.0.0.0/x", True),
        ("https://mcp.example.com/x", False),
        ("https://93.184.216.34/x", False),
    ],
)
def test_local_hosts_are_recognised_in_every_spelling(url: str, local: bool) -> None:
    assert is_local_host(url) is local
    assert endpoint_allowed(url.replace("http://", "https://"), "https://mcp.example.com/mcp") is not local


def test_a_loopback_server_may_use_loopback_endpoints() -> None:
    assert endpoint_allowed("http://127.0.0.1:9/token", "http://127.0.0.1:8/mcp")
    assert not endpoint_allowed("http://127.0.0.1:9/token", "https://mcp.example.com/mcp")
