from typing import Any

import pytest

from context_harness.oauth.challenge import BearerChallenge, parse_www_authenticate
from context_harness.oauth.discovery import (
    authorization_server_metadata_urls,
    canonical_resource,
    choose_scopes,
    issuers_match,
    protected_resource_metadata_urls,
    resource_matches,
    validate_authorization_server_metadata,
    validate_resource_metadata,
)
from context_harness.primitives.result import ErrorCode, Failure, Success


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ('Basic realm="x"', None),
        (
            'Bearer resource_metadata="https://a.example/.well-known/oauth-protected-resource"',
            BearerChallenge(resource_metadata="https://a.example/.well-known/oauth-protected-resource"),
        ),
        (
            'Bearer realm="mcp, with comma", error="invalid_token", scope="read write",'
            ' resource_metadata="https://a.example/m"',
            BearerChallenge("https://a.example/m", "read write", "invalid_token"),
        ),
        # Unquoted values, odd spacing and case in names.
        ("bearer  Scope = read ,Resource_Metadata=https://a.example/m", BearerChallenge("https://a.example/m", "read")),
        # Several schemes; only Bearer's parameters count, even when another scheme has the same names.
        (
            'Basic realm="b", scope="basic-scope", Bearer scope="files", resource_metadata="https://a.example/m"',
            BearerChallenge("https://a.example/m", "files"),
        ),
        (
            'DPoP algs="ES256", Bearer error="insufficient_scope", scope="admin"',
            BearerChallenge(None, "admin", "insufficient_scope"),
        ),
        # token68 credentials before the Bearer challenge.
        ('Negotiate abc123==, Bearer scope="x"', BearerChallenge(None, "x")),
        # Escaped quote inside a quoted string.
        (r'Bearer realm="say \"hi\"", scope="a"', BearerChallenge(None, "a")),
        ("Bearer", BearerChallenge()),
    ],
)
def test_parse_www_authenticate(header: str | None, expected: BearerChallenge | None) -> None:
    assert parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://MCP.Example.com/mcp", "https://mcp.example.com/mcp"),
        ("HTTPS://mcp.example.com/", "https://mcp.example.com"),
        ("https://mcp.example.com", "https://mcp.example.com"),
        ("https://mcp.example.com:8443/server/mcp/", "https://mcp.example.com:8443/server/mcp"),
        ("https://mcp.example.com/mcp#frag", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com/mcp?tenant=A", "https://mcp.example.com/mcp?tenant=A"),
        ("https://mcp.example.com/CaseKept", "https://mcp.example.com/CaseKept"),
    ],
)
def test_canonical_resource(url: str, canonical: str) -> None:
    assert canonical_resource(url) == canonical


@pytest.mark.parametrize(
    ("document", "server", "ok"),
    [
        ("https://a.example/mcp", "https://a.example/mcp", True),
        ("https://a.example/mcp/", "https://A.example/mcp", True),
        ("https://a.example", "https://a.example/mcp", True),  # parent path on the same origin
        ("https://a.example/mcp", "https://a.example/mcp2", False),
        ("https://a.example/other", "https://a.example/mcp", False),
        ("https://evil.example/mcp", "https://a.example/mcp", False),
        ("http://a.example/mcp", "https://a.example/mcp", False),
        ("https://a.example:444/mcp", "https://a.example/mcp", False),
    ],
)
def test_resource_matches(document: str, server: str, ok: bool) -> None:
    assert resource_matches(document, server) is ok


@pytest.mark.parametrize(
    ("server", "urls"),
    [
        (
            "https://a.example/public/mcp",
            [
                "https://a.example/.well-known/oauth-protected-resource/public/mcp",
                "https://a.example/.well-known/oauth-protected-resource",
            ],
        ),
        ("https://a.example/", ["https://a.example/.well-known/oauth-protected-resource"]),
        ("https://a.example", ["https://a.example/.well-known/oauth-protected-resource"]),
        (
            "https://a.example/mcp/",
            [
                "https://a.example/.well-known/oauth-protected-resource/mcp",
                "https://a.example/.well-known/oauth-protected-resource",
            ],
        ),
    ],
)
def test_protected_resource_metadata_urls(server: str, urls: list[str]) -> None:
    assert protected_resource_metadata_urls(server) == urls


@pytest.mark.parametrize(
    ("issuer", "urls"),
    [
        (
            "https://auth.example/tenant1",
            [
                "https://auth.example/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example/.well-known/openid-configuration/tenant1",
                "https://auth.example/tenant1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example",
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example/",
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_authorization_server_metadata_urls(issuer: str, urls: list[str]) -> None:
    assert authorization_server_metadata_urls(issuer) == urls


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://a.example", "https://a.example", True),
        ("https://a.example", "https://a.example/", True),
        ("https://a.example/t", "https://a.example/t/", False),
        ("https://a.example", "https://A.example", False),
        ("https://a.example/t1", "https://a.example/t2", False),
    ],
)
def test_issuers_match(a: str, b: str, same: bool) -> None:
    assert issuers_match(a, b) is same


def _prm(**overrides: Any) -> dict[str, Any]:
    return {
        "resource": "https://a.example/mcp",
        "authorization_servers": ["https://auth.example"],
        "scopes_supported": ["read"],
        **overrides,
    }


def test_resource_metadata_accepted_and_read() -> None:
    result = validate_resource_metadata(_prm(), "https://a.example/mcp")
    assert isinstance(result, Success)
    assert result.value.authorization_servers == ("https://auth.example",)
    assert result.value.scopes_supported == ("read",)


@pytest.mark.parametrize(
    "doc",
    [
        _prm(resource="https://evil.example/mcp"),
        _prm(resource=None),
        _prm(authorization_servers=[]),
        _prm(authorization_servers=["http://auth.example"]),  # plain http off loopback
        ["not", "an", "object"],
    ],
)
def test_resource_metadata_rejected(doc: Any) -> None:
    result = validate_resource_metadata(doc, "https://a.example/mcp")
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.OAUTH_ERROR


def _asm(**overrides: Any) -> dict[str, Any]:
    return {
        "issuer": "https://auth.example",
        "authorization_endpoint": "https://auth.example/authorize",
        "token_endpoint": "https://auth.example/token",
        "registration_endpoint": "https://auth.example/register",
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "offline_access"],
        "authorization_response_iss_parameter_supported": True,
        **overrides,
    }


def test_authorization_server_metadata_accepted_and_read() -> None:
    result = validate_authorization_server_metadata(_asm(), "https://auth.example/")
    assert isinstance(result, Success)
    meta = result.value
    assert meta.issuer == "https://auth.example"
    assert meta.registration_endpoint == "https://auth.example/register"
    assert meta.authorization_response_iss_parameter_supported is True
    assert meta.client_id_metadata_document_supported is False
    assert meta.revocation_endpoint is None


def test_loopback_http_endpoints_are_allowed() -> None:
    doc = _asm(
        issuer="http://127.0.0.1:9",
        authorization_endpoint="http://127.0.0.1:9/a",
        token_endpoint="http://localhost:9/t",
    )
    assert isinstance(validate_authorization_server_metadata(doc, "http://127.0.0.1:9"), Success)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_asm(issuer="https://evil.example"), "issuer"),
        (_asm(issuer="https://auth.example/other"), "issuer"),
        (_asm(code_challenge_methods_supported=["plain"]), "S256"),
        ({k: v for k, v in _asm().items() if k != "code_challenge_methods_supported"}, "S256"),
        (_asm(token_endpoint=None), "token_endpoint"),
        (_asm(authorization_endpoint="http://auth.example/authorize"), "authorization_endpoint"),
    ],
)
def test_authorization_server_metadata_rejected(doc: dict[str, Any], needle: str) -> None:
    result = validate_authorization_server_metadata(doc, "https://auth.example")
    assert isinstance(result, Failure)
    assert result.code is ErrorCode.OAUTH_ERROR
    assert needle in result.error
    assert result.hint


@pytest.mark.parametrize(
    ("challenge", "resource", "as_scopes", "requested", "expected"),
    [
        ("files:read", ["a", "b"], ["offline_access"], None, ["files:read", "offline_access"]),
        (None, ["a", "b"], ["a", "b"], None, ["a", "b"]),
        (None, ["a", "offline_access"], ["offline_access"], None, ["a", "offline_access"]),
        ("  ", ["a"], None, None, ["a"]),
        (None, None, ["offline_access"], None, []),
        ("x", ["a"], ["offline_access"], ["mine"], ["mine", "offline_access"]),
    ],
)
def test_choose_scopes(
    challenge: str | None,
    resource: list[str] | None,
    as_scopes: list[str] | None,
    requested: list[str] | None,
    expected: list[str],
) -> None:
    assert choose_scopes(challenge, resource, as_scopes, requested) == expected
