import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from context_harness.oauth.registration import (
    build_registration_request,
    parse_registration_response,
    redirect_fits,
    registered_loopback_port,
)
from context_harness.primitives.oauth import ClientRegistration
from context_harness.primitives.result import ErrorCode, Failure, Success
from context_harness.stores.client_store import ClientStore

ISSUER = "https://auth.example"


def test_registration_request_is_a_native_public_client() -> None:
    request = build_registration_request(["http://127.0.0.1:8123/callback"], ["read", "offline_access"])
    assert request == {
        "client_name": "context-harness",
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1:8123/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "read offline_access",
    }
    assert "scope" not in build_registration_request(["http://127.0.0.1:1/callback"])


def test_registration_response_parsed() -> None:
    result = parse_registration_response(
        201, {"client_id": "abc", "redirect_uris": ["http://127.0.0.1:1/callback"]}, ISSUER, [], 5.0
    )
    assert isinstance(result, Success)
    assert result.value == ClientRegistration(
        issuer=ISSUER, client_id="abc", redirect_uris=["http://127.0.0.1:1/callback"], registered_at=5.0
    )


def test_registration_with_secret_defaults_to_basic_and_keeps_expiry() -> None:
    result = parse_registration_response(
        201, {"client_id": "abc", "client_secret": "sek", "client_secret_expires_at": 99}, ISSUER, ["u"], 5.0
    )
    assert isinstance(result, Success)
    assert result.value.token_endpoint_auth_method == "client_secret_basic"
    assert result.value.client_secret_expires_at == 99
    assert result.value.redirect_uris == ["u"]
    assert "sek" not in repr(result.value)


@pytest.mark.parametrize(
    ("status", "doc"),
    [
        (400, {"error": "invalid_redirect_uri", "error_description": "no"}),
        (403, None),
        (201, {}),
        (201, {"client_id": ""}),
    ],
)
def test_registration_refusals(status: int, doc: object) -> None:
    result = parse_registration_response(status, doc, ISSUER, ["u"], 0.0)
    assert isinstance(result, Failure) and result.code is ErrorCode.OAUTH_ERROR


def test_refused_registration_says_what_to_do() -> None:
    result = parse_registration_response(400, {"error": "invalid_redirect_uri"}, ISSUER, ["u"], 0.0)
    assert isinstance(result, Failure)
    assert "invalid_redirect_uri" in result.error and result.hint and "--client-id" in result.hint


def reg(*uris: str, issuer: str = ISSUER, **kw: object) -> ClientRegistration:
    return ClientRegistration(issuer=issuer, client_id="abc", redirect_uris=list(uris), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("registered", "wanted", "exact", "fits"),
    [
        ("http://127.0.0.1:5000/callback", "http://127.0.0.1:5000/callback", True, True),
        ("http://127.0.0.1:5000/callback", "http://127.0.0.1:6000/callback", False, True),  # RFC 8252 any port
        ("http://127.0.0.1:5000/callback", "http://127.0.0.1:6000/callback", True, False),  # fixed --port
        ("http://127.0.0.1:5000/callback", "http://127.0.0.1:6000/other", False, False),
        (
            "http://localhost:5000/callback",
            "http://localhost:6000/callback",
            False,
            False,
        ),  # names are not loopback IPs
        ("https://app.example/cb", "http://127.0.0.1:6000/callback", False, False),
    ],
)
def test_redirect_fits(registered: str, wanted: str, exact: bool, fits: bool) -> None:
    assert redirect_fits(reg(registered), wanted, exact) is fits


def test_registered_loopback_port() -> None:
    assert registered_loopback_port(reg("https://x/cb", "http://127.0.0.1:5123/callback")) == 5123
    assert registered_loopback_port(reg("https://x/cb")) is None


def test_store_roundtrip_is_private(tmp_path: Path) -> None:
    store = ClientStore(tmp_path / "clients")
    registration = reg("http://127.0.0.1:1/callback", client_secret="sek")
    store.save("linear", registration)
    path = tmp_path / "clients" / "linear.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.get("linear", ISSUER) == registration
    assert [p.name for p in path.parent.iterdir()] == ["linear.json"]  # no temp files left


def test_store_never_hands_a_registration_to_another_issuer(tmp_path: Path) -> None:
    store = ClientStore(tmp_path)
    store.save("linear", reg("u"))
    assert store.get("linear", "https://other.example") is None
    assert store.get("linear", ISSUER + "/") is None


def test_store_ignores_expired_secret_and_garbage(tmp_path: Path) -> None:
    store = ClientStore(tmp_path)
    store.save("a", reg("u", client_secret="s", client_secret_expires_at=1.0))
    assert store.get("a", ISSUER) is None
    (tmp_path / "b.json").write_text("{not json")
    assert store.get("b", ISSUER) is None
    assert store.get("missing", ISSUER) is None


def test_store_delete_and_unsafe_names(tmp_path: Path) -> None:
    store = ClientStore(tmp_path)
    store.save("a", reg("u"))
    store.delete("a")
    store.delete("a")  # idempotent
    assert store.get("a", ISSUER) is None
    for name in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            store.save(name, reg("u"))
    assert os.listdir(tmp_path) == []


def test_the_client_store_does_not_import_the_oauth_layer() -> None:
    """Stores sit below oauth: ClientRegistration is plain data in primitives, so there is no cycle."""
    probe = (
        "import sys, context_harness.stores.client_store\n"
        "print(sorted(m for m in sys.modules if m.startswith('context_harness.oauth')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
