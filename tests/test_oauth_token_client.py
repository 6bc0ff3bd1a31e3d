import base64
import json
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

import pytest

from context_harness.oauth.authorization_request import build_authorization_url, parse_callback
from context_harness.oauth.token_client import (
    PermanentError,
    Refreshed,
    TransientError,
    classify_refresh_response,
    client_authentication,
    parse_retry_after,
    parse_token_response,
)
from context_harness.primitives.result import ErrorCode, Failure, Success

NOW = 1_700_000_000.0
ISSUER = "https://auth.example"


def test_authorization_url_carries_every_parameter_once() -> None:
    url = build_authorization_url(
        "https://auth.example/authorize?tenant=t1&state=stale",
        "client 1",
        "http://127.0.0.1:5000/callback",
        ["files:read", "offline_access"],
        "the-state",
        "the-challenge",
        "https://mcp.example/mcp",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "auth.example", "/authorize")
    query = parse_qs(parts.query)
    assert all(len(values) == 1 for values in query.values())
    assert {k: v[0] for k, v in query.items()} == {
        "tenant": "t1",
        "response_type": "code",
        "client_id": "client 1",
        "redirect_uri": "http://127.0.0.1:5000/callback",
        "state": "the-state",
        "code_challenge": "the-challenge",
        "code_challenge_method": "S256",
        "scope": "files:read offline_access",
        "resource": "https://mcp.example/mcp",
        "prompt": "consent",
    }
    assert "+" not in parts.query  # spaces as %20: some servers do not decode '+'


def test_authorization_url_omits_empty_scope_resource_and_prompt() -> None:
    query = parse_qs(
        urlsplit(build_authorization_url("https://a/x", "c", "http://127.0.0.1:1/callback", [], "s", "ch", None)).query
    )
    assert "scope" not in query and "resource" not in query and "prompt" not in query


def q(**kw: str) -> dict[str, str]:
    return {"state": "S", "iss": ISSUER, **kw}


@pytest.mark.parametrize(
    ("query", "iss_required", "code"),
    [
        (q(code="C"), True, None),
        (q(code="C", state="T"), True, ErrorCode.STATE_MISMATCH),
        ({"code": "C", "iss": ISSUER}, True, ErrorCode.STATE_MISMATCH),
        (q(code="C", iss="https://evil.example"), False, ErrorCode.STATE_MISMATCH),
        ({"code": "C", "state": "S"}, True, ErrorCode.STATE_MISMATCH),
        ({"code": "C", "state": "S"}, False, None),
        (q(error="access_denied", error_description="User said no"), True, ErrorCode.ACCESS_DENIED),
        (q(error="invalid_scope"), True, ErrorCode.OAUTH_ERROR),
        # An error with the wrong state is someone else's: it must not end our flow as "denied".
        (q(error="access_denied", state="T"), True, ErrorCode.STATE_MISMATCH),
        (q(), True, ErrorCode.OAUTH_ERROR),
    ],
)
def test_parse_callback(query: dict[str, str], iss_required: bool, code: ErrorCode | None) -> None:
    result = parse_callback(query, "S", ISSUER, iss_required)
    if code is None:
        assert result == Success("C")
    else:
        assert isinstance(result, Failure) and result.code is code
        assert "C" != result.error  # never the code itself


def test_callback_error_description_is_sanitised() -> None:
    result = parse_callback(
        q(error="access_denied", error_description="no\x1b[31m thanks\n" + "x" * 500), "S", ISSUER, True
    )
    assert isinstance(result, Failure)
    assert "\x1b" not in result.error and "\n" not in result.error
    assert len(result.error) < 300
    assert "no[31m thanks" in result.error


def body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_token_response_gets_absolute_expiry() -> None:
    result = parse_token_response(
        200, body(access_token="A", token_type="bearer", expires_in=3600, refresh_token="R", scope="x y"), NOW
    )
    assert isinstance(result, Success)
    tokens = result.value
    assert (tokens.access_token, tokens.refresh_token, tokens.scope) == ("A", "R", "x y")
    assert tokens.expires_at == NOW + 3600 and tokens.issued_at == NOW
    assert tokens.token_type == "Bearer"


@pytest.mark.parametrize("expires_in", [None, "soon", 0, -5, True])
def test_token_response_without_usable_expiry_keeps_none(expires_in: object) -> None:
    doc = {"access_token": "A"} if expires_in is None else {"access_token": "A", "expires_in": expires_in}
    result = parse_token_response(200, json.dumps(doc).encode(), NOW)
    assert isinstance(result, Success) and result.value.expires_at is None


def test_token_response_expiry_as_string_is_accepted() -> None:
    result = parse_token_response(200, body(access_token="A", expires_in="60"), NOW)
    assert isinstance(result, Success) and result.value.expires_at == NOW + 60


def test_token_response_without_refresh_token_leaves_it_none() -> None:
    result = parse_token_response(200, body(access_token="A", expires_in=60), NOW)
    assert isinstance(result, Success) and result.value.refresh_token is None


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (400, body(error="invalid_grant", error_description="expired"), ErrorCode.INVALID_GRANT),
        (401, body(error="invalid_client"), ErrorCode.INVALID_CLIENT),
        (400, body(error="unauthorized_client"), ErrorCode.INVALID_GRANT),
        (400, body(error="invalid_scope"), ErrorCode.OAUTH_ERROR),
        (500, b"oops", ErrorCode.NETWORK),
        (503, body(error="temporarily_unavailable"), ErrorCode.NETWORK),
        (200, b"<html>", ErrorCode.OAUTH_ERROR),
        (200, body(token_type="Bearer"), ErrorCode.OAUTH_ERROR),
        (200, body(access_token="A", token_type="DPoP"), ErrorCode.OAUTH_ERROR),
    ],
)
def test_token_error_responses(status: int, payload: bytes, code: ErrorCode) -> None:
    result = parse_token_response(status, payload, NOW)
    assert isinstance(result, Failure) and result.code is code


def test_token_error_never_echoes_the_body() -> None:
    result = parse_token_response(400, body(error="invalid_request", access_token="LEAKED-SECRET"), NOW)
    assert isinstance(result, Failure) and "LEAKED-SECRET" not in result.error


@pytest.mark.parametrize(
    ("secret", "method", "form", "header"),
    [
        (None, None, {"client_id": "id"}, None),
        ("s", "none", {"client_id": "id"}, None),
        ("s", "client_secret_post", {"client_id": "id", "client_secret": "s"}, None),
        ("s:/", "client_secret_basic", {"client_id": "id"}, "Basic " + base64.b64encode(b"id:s%3A%2F").decode()),
        ("s", None, {"client_id": "id"}, "Basic " + base64.b64encode(b"id:s").decode()),
    ],
)
def test_client_authentication(
    secret: str | None, method: str | None, form: dict[str, str], header: str | None
) -> None:
    assert client_authentication("id", secret, method) == (form, header)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("soon", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "headers", "payload", "kind", "retry_after"),
    [
        (200, {}, body(access_token="A", expires_in=10, refresh_token="R2"), Refreshed, None),
        (503, {}, b"", TransientError, None),
        (500, {"Retry-After": "7"}, b"", TransientError, 7.0),
        (429, {"Retry-After": "2"}, body(error="slow_down"), TransientError, 2.0),
        (408, {}, b"", TransientError, None),
        (400, {}, body(error="invalid_grant"), PermanentError, None),
        (401, {}, body(error="invalid_client"), PermanentError, None),
        (400, {}, body(error="unauthorized_client"), PermanentError, None),
        # Only the three grant/client errors need a person; anything else may be a passing fault.
        (400, {}, body(error="invalid_request"), TransientError, None),
        (200, {}, b"not json", TransientError, None),
        (404, {"Content-Type": "text/html"}, b"<html>not found</html>", TransientError, None),
        (302, {"Location": "https://sso.example/login"}, b"", TransientError, None),
        (401, {}, b"", TransientError, None),
    ],
)
def test_classify_refresh_response(
    status: int, headers: dict[str, str], payload: bytes, kind: type, retry_after: float | None
) -> None:
    outcome = classify_refresh_response(status, headers, payload, NOW)
    assert isinstance(outcome, kind)
    if isinstance(outcome, TransientError):
        assert outcome.retry_after == retry_after


def test_invalid_grant_is_permanent_with_invalid_grant_code() -> None:
    outcome = classify_refresh_response(400, {}, body(error="invalid_grant"), NOW)
    assert isinstance(outcome, PermanentError) and outcome.code is ErrorCode.INVALID_GRANT
