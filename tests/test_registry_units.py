"""The pure parts of the registry client: where to ask (CH_REGISTRY_URL), how a page is read, how a server's
remote becomes what `chctl add` writes, and which static headers a bridge sends. No network, no daemon."""

from __future__ import annotations

from typing import Any

import pytest

from context_harness.config.format import substitutions
from context_harness.primitives.mcp import MCPAuthType, MCPServer
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Success
from context_harness.registries import api
from context_harness.registries.resolve import Given, Resolved, auth_label, resolve
from context_harness.services.static_headers import static_headers
from context_harness.stores.bindings import Binding
from tests.peers.mcp_registry import Published, remote, server_json

URL = "https://mcp.example.com/mcp"


def entry(*remotes: dict[str, Any], **meta: Any) -> api.Entry:
    parsed = api.parse_entry(
        Published(server_json("io.test/srv", "a server", remotes=list(remotes)), **meta).response()
    )
    assert isinstance(parsed, api.Entry), parsed
    return parsed


def resolved(value: api.Entry, given: Given, known: MCPServer | None = None) -> Resolved:
    result = resolve(value, given, substitutions(), lambda url: known if known and url == known.url else None)
    assert isinstance(result, Success), result
    return result.value


def refused(value: api.Entry, given: Given) -> Failure:
    result = resolve(value, given, substitutions(), lambda url: None)
    assert isinstance(result, Failure), result
    return result


# --- CH_REGISTRY_URL ------------------------------------------------------------------------------------------


def test_registry_urls_are_normalised_and_unsafe_ones_left_out_with_the_reason() -> None:
    bases, problems = api.registry_bases(
        "https://registry.modelcontextprotocol.io/, https://mcp.corp.example/api/v0.1 ,,"
        "http://127.0.0.1:8080,http://registry.example.com,https://registry.modelcontextprotocol.io"
    )
    assert bases == [
        "https://registry.modelcontextprotocol.io",
        "https://mcp.corp.example/api",
        "http://127.0.0.1:8080",
    ]
    assert problems == [
        "CH_REGISTRY_URL: http://registry.example.com is plain http to another machine: anyone on the way could "
        "choose the servers it lists; left out"
    ]
    assert api.registry_bases("")[0] == []
    many, more = api.registry_bases(",".join(f"https://r{n}.example" for n in range(10)))
    assert len(many) == api.MAX_REGISTRIES and "more than 8 registries" in more[0]


# --- pages ----------------------------------------------------------------------------------------------------


def test_a_page_keeps_the_latest_version_of_each_name_and_says_what_it_skipped() -> None:
    old = Published(server_json("io.test/a", "old", version="1.0.0"), is_latest=False).response()
    new = Published(server_json("io.test/a", "new", version="2.0.0")).response()
    page = api.parse_page(
        {"servers": [old, new, {"server": {"name": "no slash"}}, 42], "metadata": {"nextCursor": "c"}}
    )
    assert isinstance(page, api.Page)
    assert [(e.server.name, e.server.version) for e in page.entries] == [("io.test/a", "2.0.0")]
    assert page.next_cursor == "c"
    assert len(page.skipped) == 2 and page.skipped[0].startswith("entry 3: server.name")


@pytest.mark.parametrize(
    ("metadata", "cursor"),
    [({"nextCursor": "x"}, "x"), ({"next_cursor": "y"}, "y"), ({"nextCursor": ""}, None), ({}, None), (None, None)],
)
def test_the_next_cursor_is_read_in_both_spellings(metadata: Any, cursor: str | None) -> None:
    page = api.parse_page({"servers": [], "metadata": metadata})
    assert isinstance(page, api.Page) and page.next_cursor == cursor


def test_a_body_that_is_not_a_server_list_says_so() -> None:
    assert api.parse_page({"items": []}) == 'not a server list (no "servers" array)'


# --- resolving a remote ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "scheme"),
    [
        ({"name": "Authorization", "isSecret": True}, None),  # the usual rule: Bearer
        ({"name": "Authorization", "isSecret": True, "value": "Bearer {token}"}, "Bearer"),
        ({"name": "Authorization", "isSecret": True, "value": "Token {token}"}, "Token"),
        ({"name": "X-Key", "isSecret": True, "value": "{key}"}, ""),
        # Not marked secret, but its value holds a secret variable: still the key's header.
        (
            {"name": "Authorization", "value": "Bearer {token}", "variables": {"token": {"isSecret": True}}},
            "Bearer",
        ),
    ],
)
def test_the_keys_scheme_follows_the_value_template(header: dict[str, Any], scheme: str | None) -> None:
    value = resolved(entry(remote(URL, headers=[header])), Given(api_key="k-1"))
    assert (value.key_header, value.key_scheme, value.api_key) == (header["name"], scheme, "k-1")
    assert value.headers == {} and value.auth_type is MCPAuthType.API_KEY


def test_a_non_secret_header_takes_the_users_value_else_its_default_and_keeps_to_its_choices() -> None:
    region = {"name": "X-Region", "default": "eu-west-1", "choices": ["us-east-1", "eu-west-1"]}
    declared = entry(
        remote(URL, headers=[region, {"name": "X-Fixed", "value": "v{n}", "variables": {"n": {"default": "2"}}}])
    )
    assert resolved(declared, Given()).headers == {"X-Region": "eu-west-1", "X-Fixed": "v2"}
    assert resolved(declared, Given(headers={"x-region": "us-east-1"})).headers["X-Region"] == "us-east-1"
    assert "must be one of its choices" in refused(declared, Given(headers={"X-Region": "mars"})).error


def test_a_key_for_a_server_that_declares_no_header_goes_in_authorization() -> None:
    value = resolved(entry(remote(URL)), Given(api_key="k-1"))
    assert (value.key_header, value.key_scheme, value.may_need_login) == ("Authorization", None, False)
    bare = resolved(entry(remote(URL)), Given())
    assert bare.auth_type is None and bare.may_need_login  # nothing says: `chctl add` asks the server


def test_what_the_curated_list_knows_about_the_same_url_is_used() -> None:
    oauth = MCPServer(name="linear", url=URL, auth_type=MCPAuthType.OAUTH)
    value = resolved(entry(remote(URL)), Given(), known=oauth)
    assert value.auth_type is MCPAuthType.OAUTH and not value.may_need_login
    keyed = MCPServer(name="ctx", url=URL, auth_type=MCPAuthType.API_KEY, api_key_header="CTX_KEY")
    assert resolved(entry(remote(URL)), Given(api_key="k"), known=keyed).key_header == "CTX_KEY"
    assert auth_label(entry(remote(URL)).server, lambda url: keyed) == "key: CTX_KEY"


def test_a_missing_secret_names_the_flag_that_gives_it() -> None:
    one = refused(entry(remote(URL, headers=[{"name": "X-Key", "isSecret": True, "isRequired": True}])), Given())
    assert one.code is ErrorCode.AUTH_REQUIRED and one.hint == (
        "pass -k KEY or --api-key-env VAR to `chctl add io.test/srv` (it goes in X-Key)"
    )


def test_deprecated_is_a_note_deleted_a_refusal() -> None:
    assert resolved(entry(remote(URL), status="deprecated", status_message="old"), Given()).notes == [
        "io.test/srv is deprecated: old"
    ]
    gone = refused(entry(remote(URL), status="deleted"), Given())
    assert gone.code is ErrorCode.NOT_FOUND and gone.error == "io.test/srv was deleted from the registry"


# --- static headers -------------------------------------------------------------------------------------------


def test_the_bridge_sends_the_last_bridge_bindings_headers_for_the_url_and_the_stored_extra_secrets() -> None:
    bindings = [
        Binding(path="/a", mode="bridge", url=URL, headers={"X-Region": "us"}),
        Binding(path="/b", mode="header", url=URL, headers={"X-Region": "header-mode"}),
        Binding(path="/c", mode="bridge", url=URL, headers={"X-Region": "eu", "Host": "evil", "X-Key": "x"}),
        Binding(path="/d", mode="bridge", url="https://elsewhere.example/mcp", headers={"X-Region": "no"}),
    ]
    key = Credential(
        name="srv",
        kind="api_key",
        state=TokenState.API_KEY,
        header_name="X-Key",
        api_key="k",
        extra_headers={"X-Second": "s"},
        server_url=URL,
    )
    assert static_headers("srv", URL, bindings, key) == {"X-Region": "eu", "X-Second": "s"}
    assert static_headers("srv", URL, bindings[1:2], None) == {"X-Region": "header-mode"}
    assert static_headers("srv", "https://nowhere.example/mcp", bindings, key) == {}
