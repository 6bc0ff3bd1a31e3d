"""The curated registry and the user's additions to it."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from context_harness.primitives.mcp import MCPAuthType, MCPServer, ServerType
from context_harness.services.registry import (
    builtin_servers,
    close_names,
    entry_problem,
    load_registry,
)

REQUIRED = {
    "context7",
    "exa",
    "atlassian",
    "linear",
    "notion",
    "sentry",
    "cloudflare",
    "github",
    "supabase",
    "neon",
    "asana",
    "stripe",
}


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


# --- the curated list -------------------------------------------------------------------------------


def test_builtin_has_every_required_server() -> None:
    names = {server.name for server in builtin_servers()}
    assert REQUIRED <= names


def test_builtin_names_are_unique_and_lowercase() -> None:
    names = [server.name for server in builtin_servers()]
    assert len(names) == len(set(names))
    for name in names:
        assert name == name.lower() and name.strip() == name and " " not in name


@pytest.mark.parametrize("server", builtin_servers(), ids=lambda server: server.name)
def test_builtin_entry_is_a_usable_remote(server: MCPServer) -> None:
    assert entry_problem(server) is None
    assert server.source == "builtin"
    assert server.server_type is ServerType.REMOTE
    assert server.url is not None
    parts = urlsplit(server.url)
    assert parts.scheme == "https" and parts.netloc
    assert not parts.path.rstrip("/").endswith("/sse"), "prefer the streamable HTTP endpoint"
    assert server.description, "every entry says what it is for"
    assert server.docs_url and server.docs_url.startswith("https://")
    if server.auth_type is MCPAuthType.API_KEY:
        assert server.api_key_header
    else:
        assert server.api_key_header is None, "a header only makes sense for api-key servers"


def test_context7_takes_its_key_in_its_own_header() -> None:
    context7 = {server.name: server for server in builtin_servers()}["context7"]
    assert context7.url == "https://mcp.context7.com/mcp"
    assert context7.auth_type is MCPAuthType.API_KEY
    assert context7.api_key_header == "CONTEXT7_API_KEY"


def test_github_and_asana_are_marked_as_needing_a_preregistered_client() -> None:
    servers = {server.name: server for server in builtin_servers()}
    assert servers["github"].needs_preregistered_client
    assert servers["github"].api_key_header == "Authorization"  # a PAT as `Authorization: Bearer`
    assert servers["asana"].needs_preregistered_client
    assert servers["asana"].auth_type is MCPAuthType.OAUTH
    # Servers with dynamic client registration do not claim to need one.
    assert not servers["linear"].needs_preregistered_client


# --- user additions ---------------------------------------------------------------------------------


def test_missing_user_file_gives_the_builtin_list_without_warnings(tmp_path: Path) -> None:
    servers, warnings = load_registry(tmp_path / "absent.json")
    assert warnings == []
    assert {server.name for server in builtin_servers()} == set(servers)


def test_user_entries_override_builtin_and_add_new_ones(tmp_path: Path) -> None:
    user_file = write_json(
        tmp_path / "registry.json",
        [
            {"name": "context7", "url": "https://context7.internal/mcp", "auth_type": "none"},
            {
                "name": "internal",
                "url": "https://mcp.example.com/mcp",
                "auth_type": "api-key",
                "api_key_header": "X-Api-Key",
                "description": "ours",
            },
        ],
    )
    servers, warnings = load_registry(user_file)
    assert warnings == []
    assert servers["context7"].url == "https://context7.internal/mcp"
    assert servers["context7"].auth_type is MCPAuthType.NONE
    assert servers["context7"].source == "user"
    assert servers["internal"].api_key_header == "X-Api-Key"
    assert servers["internal"].source == "user"
    assert servers["linear"].source == "builtin"


def test_user_file_may_wrap_entries_in_a_servers_object(tmp_path: Path) -> None:
    user_file = write_json(
        tmp_path / "registry.json",
        {"servers": [{"name": "files", "server_type": "local", "command": ["mcp-files", "/srv"]}]},
    )
    servers, warnings = load_registry(user_file)
    assert warnings == []
    assert servers["files"].server_type is ServerType.LOCAL
    assert servers["files"].command == ["mcp-files", "/srv"]


def test_user_cannot_claim_an_entry_is_builtin(tmp_path: Path) -> None:
    user_file = write_json(
        tmp_path / "registry.json", [{"name": "x", "url": "https://x.example/mcp", "source": "builtin"}]
    )
    servers, _ = load_registry(user_file)
    assert servers["x"].source == "user"


def test_bad_json_warns_with_line_and_column_and_keeps_builtin(tmp_path: Path) -> None:
    user_file = tmp_path / "registry.json"
    user_file.write_text('[\n  {"name": "a", "url": "https://a.example/mcp"},\n  {"name": }\n]\n')
    servers, warnings = load_registry(user_file)
    assert len(warnings) == 1
    assert str(user_file) in warnings[0]
    assert "line 3, column 12" in warnings[0]
    assert "context7" in servers and "a" not in servers


def test_one_bad_entry_is_skipped_with_its_name_and_field_and_the_rest_load(tmp_path: Path) -> None:
    user_file = write_json(
        tmp_path / "registry.json",
        [
            {"name": "good-one", "url": "https://one.example/mcp"},
            {"name": "bad-auth", "url": "https://bad.example/mcp", "auth_type": "password"},
            {"name": "good-two", "url": "https://two.example/mcp"},
        ],
    )
    servers, warnings = load_registry(user_file)
    assert {"good-one", "good-two"} <= set(servers)
    assert "bad-auth" not in servers
    assert len(warnings) == 1
    warning = warnings[0]
    assert str(user_file) in warning
    assert "entry 2" in warning and "bad-auth" in warning and "auth_type" in warning


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "nourl"}, "url"),
        ({"name": "nocmd", "server_type": "local"}, "command"),
        ({"name": "nohdr", "url": "https://h.example/mcp", "auth_type": "api-key"}, "api_key_header"),
        ({"name": "typo", "url": "https://t.example/mcp", "args": ["--x"]}, "args"),
        ({"url": "https://anon.example/mcp"}, "name"),
        # What a config would read as syntax, or a request would choke on, never reaches a config.
        ({"name": "subst", "url": "https://s.example/{env:HOME}/mcp"}, "url"),
        ({"name": "subst2", "url": "https://s.example/mcp?k=${GITHUB_TOKEN}"}, "url"),
        ({"name": "spaced", "url": "https://s.example/m cp"}, "url"),
        ({"name": "ftp", "url": "ftp://s.example/mcp"}, "url"),
        ({"name": "clear", "url": "http://s.example/mcp", "auth_type": "oauth"}, "url"),
        (
            {"name": "hdr", "url": "https://h.example/mcp", "auth_type": "api-key", "api_key_header": "X-Key\r\nX: 1"},
            "api_key_header",
        ),
        (
            {"name": "hdr2", "url": "https://h.example/mcp", "auth_type": "api-key", "api_key_header": "X Key"},
            "api_key_header",
        ),
    ],
)
def test_unusable_entries_are_reported_by_field(tmp_path: Path, entry: dict[str, object], field: str) -> None:
    user_file = write_json(tmp_path / "registry.json", [entry])
    servers, warnings = load_registry(user_file)
    assert len(warnings) == 1
    assert f"'{field}'" in warnings[0]
    assert set(servers) == {server.name for server in builtin_servers()}


def test_a_value_pasted_into_the_wrong_field_is_not_echoed(tmp_path: Path) -> None:
    secret = "sk_live_do_not_print_me"
    user_file = write_json(tmp_path / "registry.json", [{"name": "s", "url": "https://s.example", "auth_type": secret}])
    _, warnings = load_registry(user_file)
    assert warnings and secret not in " ".join(warnings)


@pytest.mark.parametrize("document", [{"name": "solo"}, "servers", 42, {"servers": {"a": 1}}])
def test_wrong_top_level_shape_is_a_warning(tmp_path: Path, document: object) -> None:
    user_file = write_json(tmp_path / "registry.json", document)
    servers, warnings = load_registry(user_file)
    assert len(warnings) == 1 and str(user_file) in warnings[0]
    assert "context7" in servers


def test_non_object_entries_and_repeated_names_are_reported(tmp_path: Path) -> None:
    user_file = write_json(
        tmp_path / "registry.json",
        [
            "just-a-string",
            {"name": "dup", "url": "https://1.example"},
            {"name": "dup", "url": "https://2.example"},
        ],
    )
    servers, warnings = load_registry(user_file)
    assert servers["dup"].url == "https://2.example"
    assert any("entry 1" in w and "str" in w for w in warnings)
    assert any("entry 3" in w and "dup" in w for w in warnings)


def test_unreadable_user_file_is_a_warning_not_an_exception(tmp_path: Path) -> None:
    user_file = tmp_path / "registry.json"
    user_file.mkdir()  # reading a directory fails on every platform, also as root
    servers, warnings = load_registry(user_file)
    assert len(warnings) == 1 and str(user_file) in warnings[0]
    assert "context7" in servers


def test_non_utf8_user_file_is_a_warning(tmp_path: Path) -> None:
    user_file = tmp_path / "registry.json"
    user_file.write_bytes(b'[{"name": "\xff"}]')
    _, warnings = load_registry(user_file)
    assert len(warnings) == 1


# --- suggestions ------------------------------------------------------------------------------------


def test_close_names_suggests_context7_for_a_typo() -> None:
    names = [server.name for server in builtin_servers()]
    assert close_names("contex7", names)[0] == "context7"


def test_close_names_is_case_insensitive_and_returns_the_known_spelling() -> None:
    assert close_names("LINEAR", ["linear", "notion"]) == ["linear"]
    assert close_names("notoin", ["Notion"]) == ["Notion"]


def test_close_names_offers_names_containing_a_fragment() -> None:
    assert set(close_names("cloud", ["cloudflare", "cloudflare-docs", "neon"])) == {
        "cloudflare",
        "cloudflare-docs",
    }


def test_close_names_respects_the_limit_and_finds_nothing_for_nonsense() -> None:
    names = ["neon1", "neon2", "neon3", "neon4"]
    assert len(close_names("neon", names, limit=2)) == 2
    assert close_names("zzzzzz", names) == []


def test_a_plain_http_server_without_a_credential_is_still_fine(tmp_path: Path) -> None:
    user_file = write_json(tmp_path / "registry.json", [{"name": "intranet", "url": "http://wiki.corp:8080/mcp"}])
    servers, warnings = load_registry(user_file)
    assert warnings == [] and "intranet" in servers


def test_every_builtin_entry_passes_the_gate() -> None:
    for server in builtin_servers():
        assert entry_problem(server) is None, server.name
