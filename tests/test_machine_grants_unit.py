"""The pure parts of the logins without a person, and the assertion audience's fallback against a token endpoint
of our own that takes only its own URL as `aud` (as Okta and Entra ID document)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from context_harness.config.format import substitutions
from context_harness.oauth.discovery import validate_authorization_server_metadata
from context_harness.oauth.jwts import ASSERTION_LIFETIME_S, client_assertion, id_token_claims, key_problem
from context_harness.oauth.machine_grants import (
    MachineClient,
    classify_token_answer,
    client_credentials_form,
    request_token,
    revoke_signed,
)
from context_harness.oauth.token_client import Refreshed
from context_harness.oauth.token_exchange import ID_JAG, exchange_form, parse_exchange_body
from context_harness.primitives.result import Failure, Success


def pem(key: Any, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


EC_KEY = ec.generate_private_key(ec.SECP256R1())


def test_a_key_is_checked_for_its_algorithm_without_quoting_it() -> None:
    assert key_problem(pem(EC_KEY), "ES256") is None
    assert (
        key_problem(pem(ec.generate_private_key(ec.SECP384R1())), "ES256") == "ES256 needs an EC key on the P-256 curve"
    )
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert key_problem(pem(small_rsa), "RS256") == "RS256 needs an RSA key of at least 2048 bits"
    assert "encrypted" in (key_problem(pem(EC_KEY, b"pw"), "ES256") or "")
    garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    problem = key_problem(garbage, "ES256")
    assert problem == "the key file is not a PEM private key" and "c2VjcmV0" not in problem
    assert "not one of" in (key_problem(pem(EC_KEY), "HS256") or "")


def test_the_client_assertion_names_the_client_and_the_audience_with_a_fresh_jti_and_a_short_exp() -> None:
    first = client_assertion("my-ci", "https://as.example", pem(EC_KEY), "ES256", now=1000)
    second = client_assertion("my-ci", "https://as.example", pem(EC_KEY), "ES256", now=1000)
    claims = jwt.decode(
        first, EC_KEY.public_key(), algorithms=["ES256"], audience="https://as.example", options={"verify_exp": False}
    )
    assert claims["iss"] == claims["sub"] == "my-ci"
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_S == 300
    assert claims["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]


def id_token(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": "https://idp.example", "aud": "cli", "sub": "alice", "iat": now, "exp": now + 60, **claims}, "k" * 32
    )


def test_an_id_token_must_be_the_idps_for_our_client_and_unexpired() -> None:
    good = id_token_claims(id_token(), "https://idp.example", "cli")
    assert isinstance(good, Success) and good.value.subject == "alice"
    assert isinstance(id_token_claims(id_token(aud=["x", "cli"]), "https://idp.example", "cli"), Success)
    for bad, word in (
        (id_token(iss="https://evil.example"), "issued by"),
        (id_token(aud="other"), "not for the client"),
        (id_token(exp=int(time.time()) - 1), "expired"),
        ("not.a.jwt", "not a JWT"),
    ):
        refused = id_token_claims(bad, "https://idp.example", "cli")
        assert isinstance(refused, Failure) and word in refused.error


def test_the_token_exchange_asks_for_an_id_jag_and_reads_only_an_id_jag() -> None:
    form = exchange_form("id.tok.en", "https://as.example", "https://mcp.example/mcp", ["read"])
    assert form["requested_token_type"] == ID_JAG
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    assert (form["audience"], form["resource"], form["scope"]) == (
        "https://as.example",
        "https://mcp.example/mcp",
        "read",
    )
    answer = {"access_token": "jag", "issued_token_type": ID_JAG, "token_type": "N_A"}
    assert parse_exchange_body(answer) == "jag"
    assert parse_exchange_body({**answer, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}) is None


def test_a_token_server_needs_no_browser_endpoint_or_pkce_for_a_login_without_a_person() -> None:
    doc = {"issuer": "https://as.example", "token_endpoint": "https://as.example/token"}
    assert isinstance(validate_authorization_server_metadata(doc, "https://as.example", browser=False), Success)
    assert isinstance(validate_authorization_server_metadata(doc, "https://as.example"), Failure)


@pytest.fixture
async def okta_like(aiohttp_server: Any) -> tuple[str, list[str]]:
    """A token endpoint that takes a `private_key_jwt` assertion only with its own URL as `aud`."""
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        audience = jwt.decode(str(form["client_assertion"]), options={"verify_signature": False})["aud"]
        seen.append(audience)
        if audience != str(request.url):
            return web.json_response({"error": "invalid_client", "error_description": "aud"}, status=401)
        return web.json_response({"access_token": f"t{len(seen)}", "token_type": "Bearer", "expires_in": 60})

    app = web.Application()
    app.router.add_post("/oauth2/v1/token", token)
    app.router.add_post("/oauth2/v1/revoke", token)  # the same rule: its own URL
    server = await aiohttp_server(app)
    return str(server.make_url("/oauth2/v1/token")), seen


async def test_an_assertion_refused_for_the_issuer_is_sent_once_more_for_the_token_endpoint_and_that_is_kept(
    okta_like: tuple[str, list[str]],
) -> None:
    endpoint, seen = okta_like
    issuer = endpoint.rsplit("/oauth2", 1)[0]
    client = MachineClient("my-ci", None, "private_key_jwt", pem(EC_KEY), "ES256", issuer, endpoint)
    async with aiohttp.ClientSession() as session:
        form = client_credentials_form(None, None)
        classify = partial(classify_token_answer, markers=substitutions())
        granted = await request_token(session, client, form, 5, classify)
        assert isinstance(granted.outcome, Refreshed) and seen == [issuer, endpoint]
        assert granted.client.audience == endpoint
        again = await request_token(session, granted.client, form, 5, classify)
        assert isinstance(again.outcome, Refreshed) and seen[2:] == [endpoint]  # one request: the way that worked


async def test_a_revocation_is_signed_by_the_token_endpoints_rule_its_own_url_when_that_is_what_worked(
    okta_like: tuple[str, list[str]],
) -> None:
    endpoint, seen = okta_like
    issuer, revoke = endpoint.rsplit("/oauth2", 1)[0], endpoint.replace("/token", "/revoke")
    learned = MachineClient("my-ci", None, "private_key_jwt", pem(EC_KEY), "ES256", issuer, endpoint, endpoint)
    async with aiohttp.ClientSession() as session:
        done = await revoke_signed(session, learned, revoke, "t1", "access_token", 5)
        assert done == Success(True) and seen == [revoke]  # the endpoint called, as the token endpoint took its own
        fresh = MachineClient("my-ci", None, "private_key_jwt", pem(EC_KEY), "ES256", issuer, endpoint)
        done = await revoke_signed(session, fresh, revoke, "t1", "access_token", 5)
        assert done == Success(True) and seen[1:] == [issuer, revoke]  # the issuer first, then the fallback
