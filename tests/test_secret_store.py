"""A record's two shapes (values inline, or a keychain reference) and the rules around them, on real files: token
files and client registrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from context_harness.primitives.oauth import ClientRegistration, Credential, OAuthTokens, TokenState
from context_harness.primitives.result import Success
from context_harness.stores.client_store import CLIENT_FIELDS, ClientStore
from context_harness.stores.client_store import dump as client_dump
from context_harness.stores.secret_records import FileSecretStore, SecretsChanged
from context_harness.stores.secret_store import SecretRef, Secrets
from context_harness.stores.token_store import TOKEN_FIELDS, TokenStore, dump

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
    tokens.hold("srv", TOKEN_FIELDS.take(dump(credential()), "s0"))  # an older write's values
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
    files = FileSecretStore(tokens.records)
    assert files.read("srv") is None  # the values are not in the file
    files.write("srv", TOKEN_FIELDS.take(dump(credential())))
    record = json.loads(tokens.path("srv").read_text())
    assert "secret_ref" not in record and "keychain_pending" not in record
    assert record["tokens"]["refresh_token"] == REFRESH and record["client_secret"] == CLIENT_SECRET
    found = files.read("srv")
    assert found is not None and found.same_values(TOKEN_FIELDS.take(dump(credential())))


# --- the values of any record: which fields, and the keychain item's JSON ------------------------------------


def test_secret_fields_take_strip_and_fill_nested_values_and_leave_the_rest() -> None:
    record = dump(credential())
    values = TOKEN_FIELDS.take(record, "s1")
    assert values.values == {"client_secret": CLIENT_SECRET, "access_token": ACCESS, "refresh_token": REFRESH}
    stripped = TOKEN_FIELDS.strip(record)
    assert not any(v in json.dumps(stripped) for v in (ACCESS, REFRESH, CLIENT_SECRET))
    assert stripped["tokens"]["expires_at"] == 2e9 and record["tokens"]["access_token"] == ACCESS  # a copy
    assert TOKEN_FIELDS.fill(stripped, values) == record
    api_key = {"name": "k", "kind": "api_key"}  # no `tokens` object: the tokens are not put there
    assert TOKEN_FIELDS.fill(api_key, values) == {**api_key, "client_secret": CLIENT_SECRET}


def test_a_keychain_items_json_round_trips_and_an_older_item_still_reads() -> None:
    values = CLIENT_FIELDS.take({"client_id": "c-1", "client_secret": "cs-1"}, "s1")
    assert values.identity == "c-1"
    assert Secrets.from_json(values.to_json()) == values
    older = '{"api_key": null, "access_token": "a", "refresh_token": "r", "client_secret": null, "stamp": "s0"}'
    assert Secrets.from_json(older) == Secrets({"access_token": "a", "refresh_token": "r"}, "s0")
    for not_ours in ('"a string"', '{"stamp": 7}', "[1]", "{"):
        with pytest.raises(ValueError):
            Secrets.from_json(not_ours)


def registration(secret: str | None = "client-secret-value-2", client_id: str = "c-1") -> ClientRegistration:
    return ClientRegistration(
        issuer="https://as.example",
        client_id=client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_post",
        redirect_uris=["http://127.0.0.1:5000/callback"],
    )


def test_a_registration_naming_its_keychain_item_keeps_its_metadata_and_no_secret(tmp_path: Path) -> None:
    clients = ClientStore(tmp_path / "clients")
    ref = SecretRef(service="s", key="srv/client", stamp="s1")
    assert clients.records.item_key("srv") == "srv/client"
    clients.records.write_ref("srv", client_dump(registration()), ref)
    record = json.loads((tmp_path / "clients" / "srv.json").read_text())
    assert "client-secret-value-2" not in json.dumps(record)
    assert (record["client_id"], record["issuer"], record["secret_ref"]["key"]) == (
        "c-1",
        "https://as.example",
        "srv/client",
    )
    assert clients.get("srv", "https://as.example") == registration()  # held by the process that wrote it
    clients.remember_auth_method("srv", "c-1", "client_secret_basic")  # metadata: the reference stays
    record = json.loads((tmp_path / "clients" / "srv.json").read_text())
    assert record["token_endpoint_auth_method"] == "client_secret_basic" and record["secret_ref"]["stamp"] == "s1"
    with pytest.raises(SecretsChanged):  # a new secret (or another client) goes through the vault
        clients.save("srv", registration(secret="client-secret-value-3"))
    with pytest.raises(SecretsChanged):
        clients.save("srv", registration(client_id="c-2"))
    clients.records.let_go("srv")  # a new process, before the keychain gave the secret: unusable, not empty
    assert clients.get("srv", "https://as.example") is None and clients.is_for("srv", "c-1")


async def test_without_the_daemon_a_registration_keeps_its_secret_inline_as_before(tmp_path: Path) -> None:
    clients = ClientStore(tmp_path / "clients")
    assert isinstance(await clients.keep("srv", registration()), Success)
    assert json.loads((tmp_path / "clients" / "srv.json").read_text())["client_secret"] == "client-secret-value-2"
    assert await clients.drop("srv", "c-2") is False and await clients.drop("srv", "c-1") is True
    assert clients.get("srv", "https://as.example") is None


def test_an_api_key_s_secret_headers_move_with_it(tokens: TokenStore) -> None:
    headers = {"X-Api-Secret": "second-secret-value-1"}
    keyed = Credential(
        name="srv", kind="api_key", state=TokenState.API_KEY, api_key="key-value-1", extra_headers=headers
    )
    tokens.write_ref(keyed, SecretRef(service="s", key="srv", stamp="s1"))
    text = tokens.path("srv").read_text()
    assert "second-secret-value-1" not in text and "X-Api-Secret" not in text and "key-value-1" not in text
    assert tokens.load("srv") == keyed  # filled back from the held values
    with pytest.raises(SecretsChanged):  # another header value is a new secret: the vault's to store
        tokens.save(keyed.model_copy(update={"extra_headers": {"X-Api-Secret": "second-secret-value-2"}}))
    item = TOKEN_FIELDS.take(dump(keyed), "s2")
    assert Secrets.from_json(item.to_json()) == item  # the keychain item's JSON holds the headers as an object
    FileSecretStore(tokens.records).write("srv", item)
    assert json.loads(tokens.path("srv").read_text())["extra_headers"] == headers
    assert tokens.load("srv") == keyed
