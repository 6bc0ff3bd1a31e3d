"""A credential goes only to the URL chctl recorded, never to what a config says later.

The attack: a project config shared through git changes the bound entry's `url` to another host (a pull, a
collaborator's commit). Each test is built as that attack against the real daemon, the real chctl,
oidc-provider and an MCP SDK server, with our own aiohttp server on another loopback port in the attacker's
place, recording every Authorization header it is sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import TextContent

from context_harness.config.jsonc import parse_jsonc
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.primitives.result import Failure
from context_harness.services import recorded_urls
from context_harness.services.config_service import ConfigService
from context_harness.services.mcp_service import bridge_command
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.test_bridge import messages_of

CALL_TIMEOUT_S = 60


class Recorder:
    """The attacker's server: answers anything with 401 and keeps every Authorization header it gets."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.header_values: list[str] = []  # every header of every request (a key may travel in any header)
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.header_values.extend(request.headers.values())
        if "Authorization" in request.headers:
            self.authorizations.append(request.headers["Authorization"])
        return web.Response(status=401)

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def run_chctl(user_env: UserEnv, *args: str, **kwargs: Any) -> Any:
    """chctl in a thread, so the recorder on this loop keeps answering meanwhile."""
    return await asyncio.to_thread(chctl, user_env, *args, **kwargs)


async def ok(user_env: UserEnv, *args: str, **kwargs: Any) -> Any:
    done = await run_chctl(user_env, *args, **kwargs)
    assert done.returncode == 0, done.stderr
    return done


def entry_in(path: Path, name: str = "srv") -> dict[str, Any]:
    found: dict[str, Any] = parse_jsonc(path.read_text())["mcp"][name]
    return found


def swap_url(path: Path, old: str, new: str) -> None:
    """What `git pull` does to the file: its text changes, the entry now names another server."""
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def stored(user_env: UserEnv, name: str = "srv") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())
    return data


def events_in(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recording_command(path: Path) -> str:
    """A notify or event command that appends `SERVER STATE` to `path`."""
    record = (
        f"import os; open({str(path)!r}, 'a').write(os.environ['CH_SERVER'] + ' ' + os.environ['CH_STATE'] + '\\n')"
    )
    return json.dumps([sys.executable, "-c", record])


# --- header mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret_mode", ["inline", "file"])
async def test_a_pulled_url_change_gets_no_token_beside_it_and_is_reported_once(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer, tmp_path: Path, secret_mode: str
) -> None:
    notified, events = tmp_path / "notified", tmp_path / "events"
    daemon.stop()
    daemon.extra_env["CH_NOTIFY_COMMAND"] = recording_command(notified)
    daemon.extra_env["CH_EVENT_COMMAND"] = recording_command(events)
    daemon.start()
    project, global_ = user_env.project / "opencode.json", user_env.global_config_dir / "opencode.json"
    await ok(user_env, "init")
    await ok(user_env, "init", "--global")
    for where in ("--project", "--global"):
        place = [where, str(user_env.project)] if where == "--project" else [where]
        await ok(user_env, "add", "srv", "--url", mcp_oauth_server.url, "--secret-mode", secret_mode, *place)
    await ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
    secret_file = user_env.ch_home / "secrets" / "srv.token"
    ours = entry_in(project)["headers"]["Authorization"]

    async with Recorder() as foreign:
        swap_url(project, mcp_oauth_server.url, foreign.url)
        await ok(user_env, "refresh", "srv")
        token = stored(user_env)["tokens"]["access_token"]
        text = project.read_text()
        assert foreign.url in text  # the collaborator's URL stays: it is their file...
        holds_ours = "Authorization" in text or token in text or "{file:" in text
        assert not holds_ours, "the header stayed beside the swapped URL"  # (no token in the test's output)
        assert "headers" not in entry_in(project)
        # The other config still points at the recorded URL and gets every new token.
        if secret_mode == "file":
            assert entry_in(global_)["headers"]["Authorization"] == ours
            assert secret_file.read_text() == token  # current for the configs that may read it
        else:
            assert ours != f"Bearer {token}" and entry_in(global_)["headers"]["Authorization"] == f"Bearer {token}"

        status = json.loads((await ok(user_env, "status", "--json")).stdout)["servers"][0]
        where = str(project.resolve())
        assert status["url_changed"] == [where]
        error = status["config_errors"][where]
        assert "127.0.0.1" in error and "chctl add srv --project" in error and "chctl remove srv" in error
        assert "chctl add srv --project" in (await ok(user_env, "status")).stdout
        doctor = await run_chctl(user_env, "doctor", "--json")
        assert doctor.returncode == 2
        [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "config_url"]
        assert check["level"] == "error" and "chctl add srv" in check["message"]

        # Told once, not at every refresh, nor again after a restart.
        await ok(user_env, "refresh", "srv")
        wait_for(lambda: events_in(events).count("srv refreshed") == 2, 20, what="the second refresh's event")
        wait_for(lambda: events_in(notified) == ["srv url_changed"], 20, what="the notify command")
        daemon.stop()
        daemon.start()
        await ok(user_env, "refresh", "srv")
        wait_for(lambda: events_in(events).count("srv refreshed") == 3, 20, what="the refresh after the restart")
        assert events_in(notified) == ["srv url_changed"]
        assert events_in(events).count("srv url_changed") == 1
        assert "Authorization" not in project.read_text(), "a refresh wrote the header back"
        assert len(foreign.authorizations) == 0

    # `chctl add srv` points it back: the header returns, the error goes.
    await ok(user_env, "add", "srv", "--project", str(user_env.project), "--secret-mode", secret_mode)
    assert entry_in(project)["url"] == mcp_oauth_server.url
    assert entry_in(project)["headers"]["Authorization"] == entry_in(global_)["headers"]["Authorization"]
    status = json.loads((await ok(user_env, "status", "--json")).stdout)["servers"][0]
    assert status["url_changed"] == [] and status["config_errors"] == {}


# --- the bridge --------------------------------------------------------------------------------------------


@asynccontextmanager
async def session_of(user_env: UserEnv, name: str) -> AsyncIterator[ClientSession]:
    command = bridge_command(name)
    params = StdioServerParameters(
        command=command[0], args=command[1:], env={**user_env.vars(), "CH_NO_AUTOSTART": "1"}, cwd=user_env.project
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def test_a_bridged_call_goes_to_the_recorded_url_never_to_a_swapped_config(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    project = user_env.project / "opencode.json"
    await ok(user_env, "init")
    # First a header entry in the project (shared through git), then a bridged one for Claude Code.
    await ok(user_env, "add", "srv", "--url", mcp_oauth_server.url)
    await ok(user_env, "add", "srv", "--url", mcp_oauth_server.url, "--client", "claude-code")
    await ok(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})

    async with Recorder() as foreign:
        swap_url(project, mcp_oauth_server.url, foreign.url)
        try:
            async with session_of(user_env, "srv") as client:
                result = await asyncio.wait_for(client.call_tool("whoami", {}), CALL_TIMEOUT_S)
        finally:
            # First what matters: the token never went to the swapped URL (the daemon itself sent it there).
            leaked = len(foreign.authorizations)
            assert leaked == 0 and foreign.requests == 0, f"{leaked} Authorization headers reached the swapped URL"
        assert not result.is_error, result
        assert isinstance(result.content[0], TextContent) and result.content[0].text
    assert stored(user_env)["tokens"]["access_token"] not in daemon.log(), "the token is in the daemon's log"


async def test_a_login_starts_from_the_recorded_url_not_from_a_swapped_config(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    project = user_env.project / "opencode.json"
    await ok(user_env, "init")
    await ok(user_env, "add", "srv", "--url", mcp_oauth_server.url)
    async with Recorder() as foreign:
        swap_url(project, mcp_oauth_server.url, foreign.url)
        done = await run_chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})
        assert foreign.requests == 0  # discovery, registration and the login went to the recorded server
    assert done.returncode == 0, done.stderr
    assert stored(user_env)["server_url"] == mcp_oauth_server.url
    assert "Authorization" not in project.read_text(), "the new token was written beside the swapped URL"
    status = json.loads((await ok(user_env, "status", "--json")).stdout)["servers"][0]
    assert status["url_changed"] == [str(project.resolve())]


# --- switching modes needs no --url ------------------------------------------------------------------------


def test_a_server_added_with_url_switches_modes_and_clients_without_it(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    assert chctl(user_env, "init").returncode == 0
    project = user_env.project / "opencode.json"
    url = mcp_oauth_server.url
    assert chctl(user_env, "add", "srv", "--url", url).returncode == 0
    for flags, shape in (
        (["--bridge"], "local"),
        (["--mode", "header"], "remote"),
        (["--mode", "bridge"], "local"),
        ([], "local"),  # added again without a flag: the mode stays as recorded
        (["--mode", "header"], "remote"),
    ):
        done = chctl(user_env, "add", "srv", *flags)
        assert done.returncode == 0, (flags, done.stderr)
        assert entry_in(project)["type"] == shape, flags
        if shape == "remote":
            assert entry_in(project)["url"] == url
    done = chctl(user_env, "add", "srv", "--client", "claude-code")
    assert done.returncode == 0, done.stderr
    claude = json.loads((user_env.home / ".claude.json").read_text())["mcpServers"]["srv"]
    assert claude["type"] == "stdio" and claude["args"][-2:] == ["bridge", "srv"]
    done = chctl(user_env, "add", "srv", "--client", "claude-code", "--mode", "header")
    assert done.returncode == 0, done.stderr
    claude = json.loads((user_env.home / ".claude.json").read_text())["mcpServers"]["srv"]
    assert claude["url"] == url

    # Logged in, the credential's URL is the recorded one: another --url is refused, not sent the token.
    assert chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()}).returncode == 0
    assert stored(user_env)["server_url"] == url
    other = "http://127.0.0.1:9/mcp"
    refused = chctl(user_env, "add", "srv", "--url", other)
    assert refused.returncode != 0 and "--logout" in refused.stderr
    assert entry_in(project)["url"] == url


def test_an_api_key_server_keeps_its_key_and_header_across_modes(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    assert chctl(user_env, "init").returncode == 0
    project = user_env.project / "opencode.json"
    added = chctl(user_env, "add", "keyed", "--url", server.url, "--key-header", server.header, "-k", server.key)
    assert added.returncode == 0, added.stderr
    for flags in (["--bridge"], [], ["--mode", "header"]):
        done = chctl(user_env, "add", "keyed", *flags)
        assert done.returncode == 0, done.stderr
    assert entry_in(project, "keyed")["headers"] == {server.header: server.key}
    assert server.key not in json.dumps(json.loads((user_env.ch_home / "bindings.json").read_text()))


# --- files from before URLs were recorded --------------------------------------------------------------------


def legacy(tmp_path: Path, urls: list[str], resource: str | None = None) -> tuple[TokenStore, BindingStore]:
    """A credential and header bindings as an older version wrote them: no URL recorded anywhere."""
    tokens, bindings = TokenStore(tmp_path / "tokens", tmp_path / "secrets"), BindingStore(tmp_path / "bindings.json")
    tokens.save(
        Credential(
            name="srv", kind="oauth", state=TokenState.ACTIVE, tokens=OAuthTokens(access_token="at"), resource=resource
        )
    )
    for i, url in enumerate(urls):
        path = tmp_path / f"p{i}" / "opencode.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"mcp": {"srv": {"type": "remote", "url": url}}}))
        bindings.bind("srv", Binding(path=str(path)))
    return tokens, bindings


def migrate(tokens: TokenStore, bindings: BindingStore) -> None:
    items = bindings.for_server("srv")
    found = recorded_urls.plan(
        tokens.load("srv"), items, recorded_urls.current_urls("srv", ConfigService(), items), None
    )
    recorded_urls.apply("srv", found, tokens, bindings)


def test_an_older_credential_takes_the_url_its_configs_agree_on(tmp_path: Path) -> None:
    tokens, bindings = legacy(tmp_path, ["https://a.example/mcp", "https://a.example/mcp"], "https://a.example")
    migrate(tokens, bindings)
    credential = tokens.load("srv")
    assert credential is not None and credential.server_url == "https://a.example/mcp"
    assert {b.url for b in bindings.for_server("srv")} == {"https://a.example/mcp"}


@pytest.mark.parametrize(
    ("urls", "resource"),
    [
        (["https://a.example/mcp", "https://evil.example/mcp"], None),  # they disagree: nobody can tell
        (["https://evil.example/mcp"], "https://a.example/mcp"),  # the login was for another resource
    ],
)
def test_an_older_credential_whose_configs_cannot_be_trusted_takes_no_url(
    tmp_path: Path, urls: list[str], resource: str | None
) -> None:
    tokens, bindings = legacy(tmp_path, urls, resource)
    migrate(tokens, bindings)
    credential = tokens.load("srv")
    assert credential is not None and credential.server_url is None
    assert all(b.url is None for b in bindings.for_server("srv"))  # a binding takes its credential's URL or none
    found = recorded_urls.recorded_url("srv", ConfigService(), tokens, bindings, None)
    assert isinstance(found, Failure) and "chctl add srv --url" in (found.hint or "")


# --- an older file, and a project config that arrived through git ------------------------------------------

CONTEXT7_KEY = "ctx7-key-not-real"


def legacy_key(user_env: UserEnv, name: str, key: str, header: str, config: Path) -> None:
    """What an older version left: the key stored without a URL, bound to `config` without one either."""
    TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets").save(
        Credential(
            name=name, kind="api_key", state=TokenState.API_KEY, header_name=header, header_scheme=None, api_key=key
        )
    )
    BindingStore(user_env.ch_home / "bindings.json").bind(name, Binding(path=str(config.resolve())))


def pulled_config(user_env: UserEnv, entries: dict[str, str]) -> Path:
    """The cloned project's opencode.json after the attacker's commit: each entry points at their server."""
    path = user_env.project / "opencode.json"
    remote = {name: {"type": "remote", "url": url, "oauth": False} for name, url in entries.items()}
    path.write_text(json.dumps({"mcp": remote}, indent=2))
    return path


async def test_an_older_registry_key_is_recorded_for_the_registry_url_never_for_a_pulled_project_configs(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    honest = mcp_api_key_server()
    user_env.ch_home.mkdir(mode=0o700)
    docs = {"name": "docs", "url": honest.url, "auth_type": "api-key", "api_key_header": honest.header}
    (user_env.ch_home / "registry.json").write_text(json.dumps({"servers": [{**docs, "description": "docs"}]}))
    async with Recorder() as attacker:
        project = pulled_config(user_env, {"docs": attacker.url, "context7": attacker.url})
        legacy_key(user_env, "docs", honest.key, honest.header, project)
        legacy_key(user_env, "context7", CONTEXT7_KEY, "CONTEXT7_API_KEY", project)  # the built-in registry's
        daemon = DaemonProcess(user_env).start()
        try:
            # The daemon migrates each server at its first header write, at start.
            for name, url in (("docs", honest.url), ("context7", "https://mcp.context7.com/mcp")):
                recorded = await asyncio.to_thread(
                    wait_for, lambda name=name: stored(user_env, name).get("server_url"), 20, what=f"{name}'s URL"
                )
                assert recorded == url, f"{name}'s key was recorded for {recorded}"
            checked = await run_chctl(user_env, "check", "docs", "--json", "--timeout", "30")
            [probe] = json.loads(checked.stdout)
            assert probe["outcome"] == "ok", probe  # the honest server took the key
            servers = {s["name"]: s for s in json.loads((await ok(user_env, "status", "--json")).stdout)["servers"]}
            assert servers["docs"]["url_changed"] == servers["context7"]["url_changed"] == [str(project.resolve())]
        finally:
            daemon.stop()
        assert attacker.requests == 0 and honest.key not in attacker.header_values
    text = project.read_text()
    assert honest.key not in text and CONTEXT7_KEY not in text, "a key was written beside the attacker's URL"


async def test_an_older_key_only_a_project_config_places_is_sent_nowhere_until_chctl_add_says_where(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    honest = mcp_api_key_server()
    async with Recorder() as attacker:
        project = pulled_config(user_env, {"custom": attacker.url})
        legacy_key(user_env, "custom", honest.key, honest.header, project)
        daemon = DaemonProcess(user_env).start()
        try:
            fix = "chctl add custom --url URL"
            checked = await run_chctl(user_env, "check", "custom", "--json", "--timeout", "30")
            [probe] = json.loads(checked.stdout)
            assert probe["outcome"] == "config" and fix in probe["next_action"], probe
            with pytest.raises(BaseException) as refused:
                async with session_of(user_env, "custom"):
                    pass
            assert fix in messages_of(refused.value)  # the bridge's error
            [status] = json.loads((await ok(user_env, "status", "--json")).stdout)["servers"]
            assert status["url_unrecorded"] and not status["usable"] and fix in status["last_error"]
            doctor = await run_chctl(user_env, "doctor", "--json")
            [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "credential_url"]
            assert check["level"] == "error" and fix in check["hint"] and doctor.returncode == 2
            assert attacker.requests == 0, "the key went to the URL a project config named"
            assert honest.key not in project.read_text()

            # The user says where it belongs: from then on it goes there, and only there.
            await ok(user_env, "add", "custom", "--url", honest.url)
            assert stored(user_env, "custom")["server_url"] == honest.url
            checked = await run_chctl(user_env, "check", "custom", "--json", "--timeout", "30")
            assert json.loads(checked.stdout)[0]["outcome"] == "ok"
        finally:
            daemon.stop()
        assert attacker.requests == 0
