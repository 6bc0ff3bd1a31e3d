"""The config-writer interface, in process: each client's entries fit its schema, every edit keeps the rest of
the file byte for byte, a file that does not parse is never written, and the schema checks catch what each
client would reject or ignore. (The real clients read these files in tests/test_clients_e2e.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from context_harness.config.format import CLIENTS, get_format, substitutions
from context_harness.primitives.outside_values import substitution_problem
from context_harness.primitives.result import ErrorCode, Failure, Success
from context_harness.services.config_service import ConfigService

BRIDGE = ["/abs/chctl", "bridge", "srv"]

# One file per client as people (or the client itself) leave it: comments where the syntax has them, other
# servers, other keys. Each holds the string OTHER somewhere that must survive every edit.
EXISTING = {
    "opencode": '{\n  "$schema": "https://opencode.ai/config.json",\n  // mine\n  "mcp": {\n'
    '    "other": {"type": "local", "command": ["x"]} // OTHER\n  },\n  "theme": "dark"\n}\n',
    "claude-code": '{\n  "numStartups": 12,\n  "projects": {\n    "/home/me/p": {"allowedTools": [], '
    '"hasTrustDialogAccepted": true}\n  },\n  "oauthAccount": {"emailAddress": "me@example.com"},\n'
    '  "mcpServers": {\n    "other": {"type": "stdio", "command": "OTHER", "args": []}\n  },\n'
    '  "tipsHistory": {"x": 1}\n}\n',
    "codex": '# my Codex setup\nmodel = "o3"  # OTHER\n\n[mcp_servers.other]\ncommand = "x"   # keep me\n'
    'args = ["a"]\n\n[profiles.fast]\nmodel = "o4-mini"\n',
    "gemini": '{\n  // OTHER\n  "theme": "GitHub",\n  "mcpServers": {\n'
    '    "other": {"httpUrl": "https://h/mcp"}\n  }\n}\n',
    "cursor": '{\n  "mcpServers": {\n    "other": {"url": "https://OTHER.example/mcp"}\n  }\n}\n',
    "vscode": '{\n  "inputs": [{"type": "promptString", "id": "OTHER", "password": true}],\n  "servers": {\n'
    '    "other": {"type": "stdio", "command": "x"}\n  }\n}\n',
}


def file_for(tmp_path: Path, client: str) -> Path:
    path = tmp_path / ("config.toml" if client == "codex" else "config.json")
    path.write_text(EXISTING[client])
    return path


@pytest.mark.parametrize("client", CLIENTS)
def test_every_entry_we_write_fits_the_clients_schema(client: str) -> None:
    fmt = get_format(client)
    for entry in (
        fmt.remote_entry("https://mcp.example.com/mcp", {"Authorization": "Bearer t"}, managed=True),
        fmt.remote_entry("https://mcp.example.com/mcp", {}, managed=False),
        fmt.local_entry(["npx", "-y", "server"], {"K": "v"}),
        fmt.bridge_entry(BRIDGE),
    ):
        assert fmt.schema_problems("srv", entry) == [], entry
    assert fmt.entry_url(fmt.remote_entry("https://h/mcp", {}, managed=False)) == "https://h/mcp"
    assert fmt.entry_command(fmt.bridge_entry(BRIDGE)) == BRIDGE
    assert fmt.checked_version  # each module says which version of its client it was checked against


@pytest.mark.parametrize("client", CLIENTS)
def test_add_refresh_and_remove_keep_every_other_byte(tmp_path: Path, client: str) -> None:
    fmt, config = get_format(client), ConfigService()
    path = file_for(tmp_path, client)
    original = path.read_text()
    entry = fmt.remote_entry("https://mcp.example.com/mcp", {"Authorization": "Bearer one"}, managed=True)

    assert isinstance(config.put_entry(path, "srv", entry, fmt), Success)
    added = path.read_text()
    assert "OTHER" in added and fmt.entries(fmt.syntax.parse(added))["srv"] == entry
    assert isinstance(
        config.set_header(path, "srv", "Authorization", "Bearer two", fmt, url="https://mcp.example.com/mcp"), Success
    )
    refreshed = path.read_text()
    assert refreshed == added.replace("Bearer one", "Bearer two")  # the value, and nothing else, changed
    assert isinstance(config.remove_entry(path, "srv", fmt), Success)
    # Back to the bytes we started from (opencode's header write also sets `"oauth": false`, already there).
    assert path.read_text() == original


def test_claude_json_is_merged_never_replaced(tmp_path: Path) -> None:
    fmt, config = get_format("claude-code"), ConfigService()
    path = file_for(tmp_path, "claude-code")
    before = fmt.syntax.parse(path.read_text())
    assert isinstance(config.put_entry(path, "srv", fmt.bridge_entry(BRIDGE), fmt), Success)
    after = fmt.syntax.parse(path.read_text())
    assert {k: v for k, v in after.items() if k != "mcpServers"} == {
        k: v for k, v in before.items() if k != "mcpServers"
    }
    assert after["mcpServers"] == {**before["mcpServers"], "srv": fmt.bridge_entry(BRIDGE)}


def test_codex_toml_keeps_comments_and_order(tmp_path: Path) -> None:
    fmt, config = get_format("codex"), ConfigService()
    path = file_for(tmp_path, "codex")
    assert isinstance(config.put_entry(path, "srv", fmt.bridge_entry(BRIDGE), fmt), Success)
    text = path.read_text()
    assert text.startswith(EXISTING["codex"].split("[profiles.fast]")[0])  # comments, spacing, order
    assert text.index("[mcp_servers.srv]") < text.index("[profiles.fast]")
    assert '[mcp_servers.srv]\ncommand = "/abs/chctl"\nargs = ["bridge", "srv"]\n' in text
    assert "[mcp_servers]\n" not in text  # no empty parent table


@pytest.mark.parametrize("client", CLIENTS)
def test_a_file_that_does_not_parse_is_never_written(tmp_path: Path, client: str) -> None:
    fmt, config = get_format(client), ConfigService()
    path = tmp_path / "broken"
    broken = "[mcp_servers.x\ncommand = 1\n" if client == "codex" else '{"mcpServers": {,}}\n'
    path.write_text(broken)
    put = config.put_entry(path, "srv", fmt.bridge_entry(BRIDGE), fmt)
    assert isinstance(put, Failure) and put.code is ErrorCode.CONFIG_INVALID
    assert path.read_text() == broken


def test_codex_an_edit_that_would_not_parse_is_refused(tmp_path: Path) -> None:
    fmt, config = get_format("codex"), ConfigService()
    path = file_for(tmp_path, "codex")
    edited = config.edit(path, lambda text: text + "\n[mcp_servers.other]\n", fmt)  # a duplicate table
    assert isinstance(edited, Failure) and edited.code is ErrorCode.CONFIG_INVALID
    assert path.read_text() == EXISTING["codex"]


@pytest.mark.parametrize(
    ("client", "entry", "expected"),
    [
        ("claude-code", {"type": "htp", "url": "https://h"}, "type"),
        ("claude-code", {"type": "http"}, "url: required"),
        ("claude-code", {"type": "stdio", "command": ["a", "b"]}, "command: expected a string"),
        ("codex", {"url": "https://h", "headers": {"A": "b"}}, "Codex ignores it"),  # and says nothing
        ("codex", {"url": "https://h", "command": "x"}, "both command and url"),
        ("gemini", {"headers": {}}, "needs a command, an httpUrl or a url"),
        ("gemini", {"command": "x", "args": "a b"}, "args: expected an array of strings"),
        ("cursor", {"url": "https://h", "command": "x"}, "exactly one of command and url"),
        ("vscode", {"url": "https://h"}, "type"),
        ("vscode", {"type": "http", "url": "https://h", "headers": {"A": 1}}, "every value must be a string"),
    ],
)
def test_schema_checks_name_what_the_client_would_reject_or_ignore(
    client: str, entry: dict[str, object], expected: str
) -> None:
    problems = get_format(client).schema_problems("srv", entry)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("client", CLIENTS)
def test_masking_hides_secrets_and_shows_references(client: str) -> None:
    fmt = get_format(client)
    reference = "{file:~/.context-harness/secrets/srv}" if client == "opencode" else "${SRV_TOKEN}"
    entry = fmt.remote_entry("https://h/mcp", {"Authorization": "Bearer s3cret", "X-Ref": reference}, managed=True)
    masked = fmt.mask(entry)
    assert "s3cret" not in str(masked)
    if client != "codex":  # Codex's literal headers have no reference syntax: nothing there is safe to show
        assert reference in str(masked)


def test_codex_removing_the_last_server_leaves_no_empty_table(tmp_path: Path) -> None:
    fmt, config = get_format("codex"), ConfigService()
    path = tmp_path / "config.toml"
    path.write_text('model = "o3"\n\n[mcp_servers.srv]\ncommand = "x"\n')
    removed = config.remove_entry(path, "srv", fmt)
    assert isinstance(removed, Success) and removed.value is True
    assert path.read_text() == 'model = "o3"\n\n'


@pytest.mark.parametrize(
    ("client", "value", "refused"),
    [
        ("claude-code", "k-${HOME}", True),
        ("gemini", "k-$HOME", True),
        ("cursor", "k-${env:HOME}", True),
        ("vscode", "k-${input:x}", True),
        ("opencode", "k-{env:HOME}", True),
        ("codex", "k-${HOME}", False),  # Codex writes http_headers as they are
        ("claude-code", "k-plain$", False),  # Gemini CLI's `$`, not Claude Code's `${`
    ],
)
def test_a_value_the_client_would_substitute_is_named(client: str, value: str, refused: bool) -> None:
    fmt = get_format(client)
    problem = substitution_problem(value, substitutions())
    assert (problem is not None and fmt.label in problem) is refused
    assert problem is None or value not in problem  # never echoes the value
