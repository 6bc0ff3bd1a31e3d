"""refresh_access_token / revoke_token against scripted token endpoints: each outcome is named."""

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from structlog.testing import capture_logs

from context_harness.config.format import substitutions
from context_harness.oauth.http import new_session
from context_harness.oauth.token_client import (
    PermanentError,
    Refreshed,
    TransientError,
    refresh_access_token,
    revoke_token,
)
from context_harness.primitives.result import ErrorCode, Failure, Success
from tests.oauth_fakes import (
    ScriptedTokenEndpoint,
    half_response_server,
    hang,
    keepalive_dropping_server,
    respond,
    serve,
)

OLD_REFRESH = "old-refresh-SECRET"
CLIENT_SECRET = "client-SECRET"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as s:
        yield s


async def refresh(session: aiohttp.ClientSession, base: str, **kw: object) -> object:
    with capture_logs() as logs:
        outcome = await refresh_access_token(
            session,
            base + "/token",
            refresh_token=OLD_REFRESH,
            client_id="client-1",
            resource="https://mcp.example/mcp",
            markers=substitutions(),
            **kw,  # type: ignore[arg-type]
        )
    assert OLD_REFRESH not in repr(logs) and CLIENT_SECRET not in repr(logs)
    assert OLD_REFRESH not in repr(outcome) or isinstance(outcome, Refreshed)
    return outcome


async def test_success_with_rotation(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([respond(200, {"access_token": "A2", "refresh_token": "R2", "expires_in": 60})])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base)
    assert isinstance(outcome, Refreshed)
    assert (outcome.tokens.access_token, outcome.tokens.refresh_token) == ("A2", "R2")
    assert outcome.tokens.expires_at is not None
    assert endpoint.forms == [
        {
            "grant_type": "refresh_token",
            "refresh_token": OLD_REFRESH,
            "resource": "https://mcp.example/mcp",
            "client_id": "client-1",
        }
    ]


async def test_success_without_new_refresh_token_returns_none_for_it(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([respond(200, {"access_token": "A2", "token_type": "Bearer"})])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base)
    assert isinstance(outcome, Refreshed)
    assert outcome.tokens.refresh_token is None and outcome.tokens.expires_at is None


async def test_confidential_client_uses_basic_auth_and_scope(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([respond(200, {"access_token": "A2"})])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base, client_secret=CLIENT_SECRET, scope="read")
    assert isinstance(outcome, Refreshed)
    assert endpoint.auth_headers == ["Basic " + base64.b64encode(f"client-1:{CLIENT_SECRET}".encode()).decode()]
    assert "client_secret" not in endpoint.forms[0] and endpoint.forms[0]["scope"] == "read"


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (503, None, None),
        (500, None, None),
        (429, {"Retry-After": "2"}, 2.0),
        (408, None, None),
        (502, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
async def test_transient_statuses(
    session: aiohttp.ClientSession, status: int, headers: dict[str, str] | None, retry_after: float | None
) -> None:
    endpoint = ScriptedTokenEndpoint([respond(status, {"error": "temporarily_unavailable"}, headers)])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base)
    assert isinstance(outcome, TransientError) and outcome.retry_after == retry_after
    assert len(endpoint.forms) == 1  # no hidden retries of an answered request


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "unauthorized_client"])
async def test_dead_grant_is_permanent_invalid_grant(session: aiohttp.ClientSession, error: str) -> None:
    endpoint = ScriptedTokenEndpoint([respond(400, {"error": error, "error_description": "refresh token revoked"})])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base)
    expected = ErrorCode.INVALID_CLIENT if error == "invalid_client" else ErrorCode.INVALID_GRANT
    assert isinstance(outcome, PermanentError) and outcome.code is expected
    assert error in outcome.reason


async def test_another_oauth_error_is_transient(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([respond(400, {"error": "invalid_scope"})])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base)
    assert isinstance(outcome, TransientError) and "invalid_scope" in outcome.reason


async def test_timeout_is_transient(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint([])
    endpoint.script.append(hang(endpoint))
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base, timeout_s=0.3)
        endpoint.release.set()
    assert isinstance(outcome, TransientError) and "did not answer" in outcome.reason


async def test_connection_closed_mid_response_is_transient_after_one_retry(session: aiohttp.ClientSession) -> None:
    async with half_response_server() as (base, count):
        outcome = await refresh(session, base)
    assert isinstance(outcome, TransientError) and "closed the connection" in outcome.reason
    assert count[0] == 2


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome = await refresh(session, f"http://127.0.0.1:{port}")
    assert isinstance(outcome, TransientError) and "cannot reach" in outcome.reason


async def test_pooled_connection_closed_by_the_server_is_retried_once(session: aiohttp.ClientSession) -> None:
    """Node drops idle keep-alive connections; a request sent on such a stale one is retried fresh."""
    async with keepalive_dropping_server(b'{"access_token": "A2"}') as (base, count):
        assert isinstance(await refresh(session, base), Refreshed)
        assert isinstance(await refresh(session, base), Refreshed)
    assert count[0] == 3  # the second request was sent twice: once on the dropped connection


async def test_revoke_outcomes(session: aiohttp.ClientSession) -> None:
    endpoint = ScriptedTokenEndpoint(
        [
            respond(200),
            respond(400, {"error": "unsupported_token_type"}),
            respond(503),
            respond(401, {"error": "invalid_client"}),
        ]
    )
    async with serve(endpoint.app()) as base:
        url = base + "/revoke"
        assert await revoke_token(
            session, url, token="tok", token_type_hint="refresh_token", client_id="client-1"
        ) == Success(True)
        assert await revoke_token(session, url, token="tok", client_id="client-1") == Success(False)
        third = await revoke_token(session, url, token="tok", client_id="client-1")
        assert isinstance(third, Failure) and third.code is ErrorCode.NETWORK
        fourth = await revoke_token(
            session,
            url,
            token="tok",
            client_id="client-1",
            client_secret=CLIENT_SECRET,
            auth_method="client_secret_post",
        )
        # INVALID_CLIENT: a signed revocation tries its other audience on it (machine_grants.revoke_signed)
        assert isinstance(fourth, Failure) and fourth.code is ErrorCode.INVALID_CLIENT
    assert endpoint.forms[0] == {"token": "tok", "token_type_hint": "refresh_token", "client_id": "client-1"}
    assert endpoint.forms[3]["client_secret"] == CLIENT_SECRET


async def test_a_refreshed_token_a_client_would_substitute_is_revoked_and_permanent(
    session: aiohttp.ClientSession,
) -> None:
    hostile = {"access_token": "${AWS_SECRET_ACCESS_KEY}", "refresh_token": "R2-SECRET"}
    endpoint = ScriptedTokenEndpoint([respond(200, hostile), respond(200), respond(200), respond(200, hostile)])
    async with serve(endpoint.app()) as base:
        outcome = await refresh(session, base, revocation_endpoint=base + "/revoke")
        unrevoked = await refresh(session, base)
    assert isinstance(outcome, PermanentError) and outcome.code is ErrorCode.OAUTH_ERROR
    assert "Claude Code" in outcome.reason and "revoked at the server" in outcome.reason
    assert "AWS_SECRET" not in outcome.reason
    revocations = [form for form in endpoint.forms if "token" in form]
    assert [(f["token"], f["token_type_hint"]) for f in revocations] == [
        ("R2-SECRET", "refresh_token"),
        ("${AWS_SECRET_ACCESS_KEY}", "access_token"),
    ]
    assert isinstance(unrevoked, PermanentError) and "no revocation endpoint" in unrevoked.reason
