"""The redaction processor: secret values and secret-named keys are masked, everything else stays readable."""

from __future__ import annotations

import io
import json

import structlog

from context_harness.daemon.logging import configure_logging

ACCESS = "access-8f3kQ9zP2mX7vL4nB6cR1tY5wE0uI3oA"
REFRESH = "refresh-Zx9Kq2Lm8Np4Rs6Tv1Wy3Ab5Cd7Ef0Gh"
AUTH_CODE = "SplxlOBeZQQYbYS6WxSbIA"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CLIENT_SECRET = "cs-4b1c9e0f7a2d"


def logged(**event: object) -> dict[str, object]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    try:
        structlog.get_logger("test").info("something_happened", **event)
    finally:
        configure_logging("info", "json")
    line: dict[str, object] = json.loads(stream.getvalue())
    return line


def test_error_codes_states_and_facts_about_secrets_stay_readable() -> None:
    line = logged(
        code="CONFIG_INVALID",
        status=404,
        exit_code=0,
        has_refresh_token=True,
        token_kind="refresh_token",
        token_endpoint="http://127.0.0.1:9/token",
        token_type="Bearer",
        auth_method="client_secret_basic",
        expires_at=1767225600.0,
        state="needs_reauth",
    )
    assert line["code"] == "CONFIG_INVALID"
    assert line["status"] == 404 and line["exit_code"] == 0
    assert line["has_refresh_token"] is True and line["token_kind"] == "refresh_token"
    assert line["token_endpoint"] == "http://127.0.0.1:9/token"
    assert line["token_type"] == "Bearer" and line["auth_method"] == "client_secret_basic"
    assert line["expires_at"] == 1767225600.0 and line["state"] == "needs_reauth"


def test_tokens_codes_verifiers_and_client_secrets_stay_masked() -> None:
    line = logged(
        access_token=ACCESS,
        refresh_token=REFRESH,
        code=AUTH_CODE,
        authorization_code=AUTH_CODE,
        code_verifier=VERIFIER,
        client_secret=CLIENT_SECRET,
        headers={"Authorization": f"Bearer {ACCESS}"},
        message=f"the server said {REFRESH} is gone",
    )
    text = json.dumps(line)
    for secret in (ACCESS, REFRESH, AUTH_CODE, VERIFIER, CLIENT_SECRET):
        assert secret not in text
