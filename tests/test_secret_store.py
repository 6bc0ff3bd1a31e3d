"""The token file's two shapes (values inline, or a keychain reference) and the rules around them, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.secret_store import SecretRef, Secrets
from context_harness.stores.token_store import FileSecretStore, SecretsChanged, TokenStore

ACCESS, REFRESH, CLIENT_SECRET = "access-value-1", "refresh-value-1", "client-secret-value-1"


def credential(access: str = ACCESS) -> Credential:
    tokens = OAuthTokens(access_token=access, refresh_token=REFRESH, expires_at=2e9, scope="read")
    return Credential(
        name="srv", kind="oauth", state=TokenState.ACTIVE, tokens=tokens, client_id="c", client_secret=CLIENT_SECRET
    )


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens", tmp_path / "secrets")


def test_a_reference_leaves_no_value_in_the_token_file_and_keeps_the_metadata(tokens: TokenStore) -> None:
    ref = SecretRef(service="context-harness:/h", key="srv", stamp="s1")
    tokens.write_ref(credential(), ref)
    text = tokens.path("srv").read_text()
    assert not any(value in text for value in (ACCESS, REFRESH, CLIENT_SECRET))
    record = json.loads(text)
    assert record["tokens"]["expires_at"] == 2e9 and record["client_id"] == "c"
    assert record["secret_ref"] == {"store": "keyring", "service": "context-harness:/h", "key": "srv", "stamp": "s1"}
    assert tokens.load("srv") == credential()  # the values this process wrote are held


def test_values_not_held_or_of_another_stamp_load_as_no_credential(tokens: TokenStore) -> None:
    tokens.write_ref(credential(), SecretRef(service="s", key="srv", stamp="s1"))
    tokens.hold("srv", Secrets.of(credential(), "s0"))  # an older write's values
    assert tokens.load("srv") is None
    tokens.let_go("srv")
    assert tokens.load("srv") is None
    assert tokens.record("srv") is not None  # the file is there: status says why it cannot be used


def test_a_metadata_change_keeps_the_reference_and_new_values_must_go_through_the_vault(tokens: TokenStore) -> None:
    tokens.write_ref(credential(), SecretRef(service="s", key="srv", stamp="s1"))
    tokens.save(credential().model_copy(update={"state": TokenState.NEEDS_REAUTH, "last_error": "refused"}))
    record = tokens.record("srv")
    assert record is not None and record["secret_ref"]["stamp"] == "s1" and record["state"] == "needs_reauth"
    with pytest.raises(SecretsChanged):
        tokens.save(credential(access="access-value-2"))
    assert ACCESS not in tokens.path("srv").read_text()


def test_the_file_store_puts_the_values_back_inline_and_drops_reference_and_mark(tokens: TokenStore) -> None:
    tokens.write_inline(credential(), pending=True)
    assert json.loads(tokens.path("srv").read_text())["keychain_pending"] is True
    tokens.save(credential())  # a metadata change keeps a pending move pending
    assert json.loads(tokens.path("srv").read_text())["keychain_pending"] is True
    tokens.write_ref(credential(), SecretRef(service="s", key="srv", stamp="s1"))
    files = FileSecretStore(tokens)
    assert files.read("srv") is None  # the values are not in the file
    files.write("srv", Secrets.of(credential()))
    record = json.loads(tokens.path("srv").read_text())
    assert "secret_ref" not in record and "keychain_pending" not in record
    assert record["tokens"]["refresh_token"] == REFRESH and record["client_secret"] == CLIENT_SECRET
    found = files.read("srv")
    assert found is not None and found.same_values(Secrets.of(credential()))
