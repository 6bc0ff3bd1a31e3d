"""`MCPService.add` in process, built from real stores in tmp_path: the entry each case writes, the binding that
records it, where the key goes (stored 0600 before any config names it), and the cases that must write nothing
at all (one bad target among several, a config that does not parse, a key sent in clear text, an unknown name).
No daemon: the service is called directly."""

from __future__ import annotations

import asyncio
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from context_harness.config.format import get_format
from context_harness.config.jsonc import parse_jsonc
from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings
from context_harness.primitives.mcp import MCPAuthType, SecretMode
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.config_service import ConfigService, ConfigTarget
from context_harness.services.mcp_service import AddOutcome, AddRequest, MCPService, bridge_command
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

WIKI_URL = "https://wiki.example.com/mcp"
DOCS_URL = "https://docs.example.com/mcp"
KEY = "k-test-secret-4711"
REGISTRY = {"servers": [{"name": "team-wiki", "url": WIKI_URL, "auth_type": "oauth"}]}
# As `chctl init` leaves it, plus a comment of the user's.
OPENCODE_CONFIG = '{\n  "$schema": "https://opencode.ai/config.json",\n  // mine\n  "mcp": {}\n}\n'


@dataclass
class Harness:
    mcp: MCPService
    config: ConfigService
    tokens: TokenStore
    bindings: BindingStore
    project: Path  # holds opencode.json (0644, as `chctl init` makes it)

    @property
    def opencode_json(self) -> Path:
        return self.project / "opencode.json"

    def target(self) -> ConfigTarget:
        return ConfigTarget(cwd=self.project, project=self.project)

    def add(self, name: str, **fields: Any) -> Result[AddOutcome]:
        """`chctl add`'s work: the entries, then the publisher's header."""
        return asyncio.run(self.mcp.add(AddRequest(name=name, target=self.target(), **fields)))

    def opencode_entries(self) -> dict[str, Any]:
        entries: dict[str, Any] = parse_jsonc(self.opencode_json.read_text())["mcp"]
        return entries


def make_harness(tmp_path: Path) -> Harness:
    """The one place that builds the service and its stores (as the daemon does): a change in how they are
    built is fixed here alone."""
    settings = Settings(home=tmp_path / "ch")
    settings.home.mkdir(mode=0o700)
    settings.user_registry_file.write_text(json.dumps(REGISTRY))
    services = build_services(settings)
    project = tmp_path / "project"
    project.mkdir()
    (project / "opencode.json").write_text(OPENCODE_CONFIG)
    (project / "opencode.json").chmod(0o644)
    return Harness(services.mcp, services.config, services.tokens, services.bindings, project)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return make_harness(tmp_path)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_nothing_written(harness: Harness, name: str, config_text: str = OPENCODE_CONFIG) -> None:
    assert harness.opencode_json.read_text() == config_text
    assert harness.bindings.load() == {}
    assert harness.tokens.load(name) is None


def test_a_registry_oauth_server_is_added_to_opencode_and_waits_for_a_login(harness: Harness) -> None:
    added = harness.add("team-wiki")
    assert isinstance(added, Success), added
    outcome = added.value
    # opencode must not start its own flow on a 401: we keep the header (after `chctl auth team-wiki`).
    expected = {"type": "remote", "url": WIKI_URL, "oauth": False}
    assert outcome.entry == expected and harness.opencode_entries() == {"team-wiki": expected}
    assert outcome.auth_type is MCPAuthType.OAUTH and outcome.needs_auth is True
    assert outcome.path == harness.opencode_json.resolve()
    assert "// mine" in harness.opencode_json.read_text()
    assert harness.bindings.for_server("team-wiki") == [
        Binding(
            path=str(harness.opencode_json.resolve()),
            client="opencode",
            mode="header",
            url=WIKI_URL,
            auth=MCPAuthType.OAUTH,  # recorded: `needs login` until a login is stored, and after a logout
        )
    ]
    assert harness.tokens.load("team-wiki") is None  # nothing to store before the login
    assert mode_of(harness.opencode_json) == 0o644  # no secret in it yet


def test_a_login_made_before_the_add_goes_into_the_entry_at_once(harness: Harness) -> None:
    harness.tokens.save(
        Credential(
            name="team-wiki",
            kind="oauth",
            state=TokenState.ACTIVE,
            tokens=OAuthTokens(access_token="at-earlier-login"),
            server_url=WIKI_URL,  # recorded at that login
        )
    )
    added = harness.add("team-wiki")
    assert isinstance(added, Success) and added.value.needs_auth is False
    assert harness.opencode_entries()["team-wiki"]["headers"] == {"Authorization": "Bearer at-earlier-login"}
    assert mode_of(harness.opencode_json) == 0o600


@pytest.mark.parametrize(
    ("key_header", "header", "value"),
    [(None, "Authorization", f"Bearer {KEY}"), ("X-Api-Key", "X-Api-Key", KEY)],
    ids=["bearer", "own-header"],
)
def test_an_api_key_for_a_custom_url_is_stored_0600_before_the_config_names_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, key_header: str | None, header: str, value: str
) -> None:
    edit = harness.config.edit  # every config write goes through it
    seen: list[tuple[int | None, str | None]] = []  # the token file's mode and key when a config is written

    def edit_noting_the_stored_key(*args: Any, **kwargs: Any) -> Result[None]:
        file, stored = harness.tokens.path("docs"), harness.tokens.load("docs")
        seen.append((mode_of(file) if file.exists() else None, stored.api_key if stored else None))
        return edit(*args, **kwargs)

    monkeypatch.setattr(harness.config, "edit", edit_noting_the_stored_key)
    added = harness.add("docs", url=DOCS_URL, api_key=KEY, key_header=key_header)
    assert isinstance(added, Success), added
    assert seen == [(0o600, KEY)] * 2  # the entry, then the header: the key was on disk, private, at each
    assert harness.opencode_entries()["docs"] == {
        "type": "remote",
        "url": DOCS_URL,
        "headers": {header: value},
        "oauth": False,
    }
    assert mode_of(harness.opencode_json) == 0o600  # the inline key: only its owner reads the file now
    assert mode_of(harness.tokens.path("docs").parent) == 0o700
    assert added.value.auth_type is MCPAuthType.API_KEY and added.value.needs_auth is False
    assert harness.bindings.for_server("docs") == [
        Binding(
            path=str(harness.opencode_json.resolve()),
            client="opencode",
            secret_mode=SecretMode.INLINE,
            url=DOCS_URL,
            auth=MCPAuthType.API_KEY,
        )
    ]


def test_add_writes_the_entry_without_the_secret_and_the_publisher_writes_the_header(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = harness.mcp.publisher.publish
    published: list[str] = []

    async def publish_later(name: str) -> Any:
        published.append(name)

    monkeypatch.setattr(harness.mcp.publisher, "publish", publish_later)
    added = harness.add("docs", url=DOCS_URL, api_key=KEY)
    assert isinstance(added, Success), added
    assert published == ["docs"]
    assert harness.opencode_entries()["docs"] == {"type": "remote", "url": DOCS_URL, "oauth": False}
    assert KEY not in harness.opencode_json.read_text() and mode_of(harness.opencode_json) == 0o644
    asyncio.run(publish("docs"))  # the one writer of secrets into configs
    assert harness.opencode_entries()["docs"]["headers"] == {"Authorization": f"Bearer {KEY}"}
    assert mode_of(harness.opencode_json) == 0o600


def test_a_bridged_server_runs_chctl_bridge_and_keeps_the_key_out_of_the_file(harness: Harness) -> None:
    added = harness.add("docs", url=DOCS_URL, api_key=KEY, bridge=True)
    assert isinstance(added, Success), added
    entry = harness.opencode_entries()["docs"]
    assert entry == get_format("opencode").bridge_entry(bridge_command("docs"))
    assert entry["type"] == "local" and entry["command"][-2:] == ["bridge", "docs"]
    assert KEY not in harness.opencode_json.read_text()
    assert mode_of(harness.opencode_json) == 0o644  # nothing secret in it
    assert harness.bindings.for_server("docs") == [
        Binding(
            path=str(harness.opencode_json.resolve()),
            client="opencode",
            mode="bridge",
            url=DOCS_URL,
            auth=MCPAuthType.API_KEY,
        )
    ]
    stored = harness.tokens.load("docs")  # the daemon adds the key to the bridged traffic
    assert stored is not None and stored.api_key == KEY


BROKEN_CODEX = '[mcp_servers.other\ncommand = "x"\n'


@pytest.mark.parametrize("bad", ["codex-file-does-not-parse", "unknown-client"])
def test_one_bad_target_among_several_clients_writes_nothing_anywhere(harness: Harness, bad: str) -> None:
    codex = harness.project / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text(BROKEN_CODEX)
    # The bad target comes last: checking each client's file only when writing it would have written the others.
    clients = ("opencode", "claude-code", "codex" if bad == "codex-file-does-not-parse" else "nonesuch")
    added = harness.add("docs", url=DOCS_URL, api_key=KEY, clients=clients)
    assert isinstance(added, Failure)
    assert added.code is (ErrorCode.CONFIG_INVALID if bad == "codex-file-does-not-parse" else ErrorCode.INVALID_PARAMS)
    assert_nothing_written(harness, "docs")
    assert not (harness.project / ".mcp.json").exists()  # Claude Code's file, which add would have created
    assert codex.read_text() == BROKEN_CODEX


@pytest.mark.parametrize(
    "request_fields", [{"name": "team-wiki"}, {"name": "docs", "url": DOCS_URL, "api_key": KEY}], ids=["oauth", "key"]
)
def test_a_config_that_does_not_parse_is_a_failure_and_stays_as_it_was(
    harness: Harness, request_fields: dict[str, Any]
) -> None:
    broken = '{\n  "mcp": {\n    "other": {"type": "remote" "url": "https://x"}\n  }\n}\n'  # a missing comma
    harness.opencode_json.write_text(broken)
    added = harness.add(**request_fields)
    assert isinstance(added, Failure) and added.code is ErrorCode.CONFIG_INVALID
    assert str(harness.opencode_json) in added.error and KEY not in added.error
    assert_nothing_written(harness, request_fields["name"], config_text=broken)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://docs.example.com/mcp", True),
        ("http://127.0.0.1.nip.io/mcp", True),  # a name that merely starts like loopback
        ("http://127.0.0.1:8931/mcp", False),  # loopback: the key never leaves the machine
    ],
)
def test_an_api_key_is_never_sent_in_clear_text_off_this_machine(harness: Harness, url: str, refused: bool) -> None:
    added = harness.add("docs", url=url, api_key=KEY)
    if not refused:
        assert isinstance(added, Success), added
        assert harness.opencode_entries()["docs"]["headers"] == {"Authorization": f"Bearer {KEY}"}
        return
    assert isinstance(added, Failure) and added.code is ErrorCode.INVALID_PARAMS
    assert "clear text" in added.error and "https://" in (added.hint or "")
    assert KEY not in added.error + (added.hint or "")
    assert_nothing_written(harness, "docs")


@pytest.mark.parametrize(("name", "suggested"), [("team-wkii", "team-wiki"), ("contex7", "context7")])
def test_an_unknown_name_is_not_found_with_the_names_it_resembles(harness: Harness, name: str, suggested: str) -> None:
    added = harness.add(name)
    assert isinstance(added, Failure) and added.code is ErrorCode.NOT_FOUND
    assert f"unknown server {name!r}" in added.error
    assert f"did you mean `{suggested}`" in (added.hint or "") and f"`chctl add {name} --url URL`" in (added.hint or "")
    assert_nothing_written(harness, name)


@pytest.mark.parametrize(
    "entry",
    [
        {"url": "https://mcp.example/{env:ANTHROPIC_API_KEY}/mcp", "auth_type": "api-key", "api_key_header": "X-Key"},
        {"url": "https://mcp.example/mcp", "auth_type": "api-key", "api_key_header": "X-Key\r\nX-Evil: 1"},
        {"url": "https://mcp.example/mcp?t=${GITHUB_TOKEN}"},
    ],
)
def test_a_registry_entry_a_config_could_not_hold_safely_is_skipped_not_written(
    harness: Harness, entry: dict[str, str]
) -> None:
    registry = harness.mcp.user_registry
    registry.write_text(json.dumps({"servers": [{"name": "planted", **entry}]}))
    harness.mcp.reload_registry()
    assert "planted" not in harness.mcp.registry
    [warning] = harness.mcp.registry_warnings
    assert "planted" in warning and ("'url'" in warning or "'api_key_header'" in warning)
    added = harness.add("planted", api_key=KEY) if "api_key_header" in entry else harness.add("planted")
    assert isinstance(added, Failure) and added.code is ErrorCode.NOT_FOUND
    assert harness.opencode_json.read_text() == OPENCODE_CONFIG
    assert harness.tokens.load("planted") is None


@pytest.mark.parametrize(
    ("secret", "header"),
    [("{env:ANTHROPIC_API_KEY}", "X-Key"), ("k-$HOME", "X-Key"), ("k 1", "X-Key"), (KEY, "X-Key\r\nX-Evil")],
)
def test_the_publisher_checks_a_stored_value_again_before_it_writes(harness: Harness, secret: str, header: str) -> None:
    # A key stored before the gate existed (or a planted token file) reaches no config.
    assert isinstance(harness.add("docs", url=DOCS_URL, api_key=KEY, key_header="X-Key"), Success)
    before = harness.opencode_json.read_text()
    planted = harness.tokens.load("docs")
    assert planted is not None
    harness.tokens.save(planted.model_copy(update={"api_key": secret, "header_name": header}))
    report = asyncio.run(harness.mcp.publisher.publish("docs"))
    assert report.written == [] and list(report.failed) == [str(harness.opencode_json.resolve())]
    [reason] = report.failed.values()
    assert "not written" in reason and secret not in reason
    assert harness.opencode_json.read_text() == before
