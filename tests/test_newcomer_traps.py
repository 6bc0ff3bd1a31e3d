"""What a new user trips on (issue 29 §1, §2, §3, §5, §9), each point run as the user ran it: the real daemon and
chctl against the project's peers — MCP SDK servers guarded by an API key or by OAuth at oidc-provider.

§1 a server added again keeps its key header, mode and configs unless a flag names others, and `add` says what
changed; the hints after a refused key lead back to a working server. §2 a server that asks for an OAuth login
shows `needs login` from `add` until a login is stored, and again after a logout; doctor says one thing about it.
§3 `--logout` of an API-key server keeps the key and says how to change or remove it; a stored key clears a
failed login. §5 a key or token the server refuses shows in `status` and `doctor` until a request succeeds.
§9 a header written right after the daemon starts waits for the start-up repair instead of failing.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from context_harness.primitives.oauth import Credential, TokenState
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore
from tests.oauth_fakes import serve
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.test_bridge import bridged_session, messages_of

WRONG_KEY = "k-not-the-servers-key"
BROWSER = {"BROWSER": browser_command()}


def ok(user_env: UserEnv, *args: str, **kwargs: Any) -> str:
    """`chctl ARGS` that must succeed; its stdout."""
    done = chctl(user_env, *args, **kwargs)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def status_of(user_env: UserEnv, name: str) -> dict[str, Any]:
    rows = json.loads(ok(user_env, "status", "--json"))["servers"]
    [row] = [r for r in rows if r["name"] == name]
    return dict(row)


def status_line(user_env: UserEnv, name: str) -> str:
    [line] = [line for line in ok(user_env, "status").splitlines() if line.startswith(name + " ")]
    return line


def doctor_lines(user_env: UserEnv, name: str) -> list[str]:
    """doctor's verdicts on `name`'s state (not where its secret rests), as printed: mark, message, hint."""
    checks = json.loads(chctl(user_env, "doctor", "--json").stdout)
    marks = {"ok": "✓", "warn": "!", "error": "✗"}
    return [
        f"{marks[c['level']]} {c['message']}" + (f"\n  hint: {c['hint']}" if c["level"] != "ok" and c["hint"] else "")
        for c in checks
        if c["name"] in ("server_state", "server_needs_auth") and c["message"].startswith(name)
    ]


def check_code(user_env: UserEnv, name: str) -> int:
    done = chctl(user_env, "check", name, "--timeout", "30")
    assert done.returncode in (0, 1, 2), done.stderr
    return done.returncode


def add_keyed(user_env: UserEnv, server: McpApiKeyServer, key: str, *flags: str, name: str = "peer") -> str:
    if not (user_env.project / "opencode.json").exists():
        ok(user_env, "init")
    return ok(user_env, "add", name, "--url", server.url, "-k", key, "--key-header", server.header, *flags)


def one_route(handler: Any) -> web.Application:
    """An MCP server of our own at /mcp: `handler` answers every method."""
    app = web.Application()
    app.router.add_route("*", "/mcp", handler)
    return app


def binding_modes(user_env: UserEnv, name: str) -> list[str]:
    return [b.mode for b in BindingStore(user_env.ch_home / "bindings.json").for_server(name)]


# --- §1: added again, a server keeps what no flag changes -----------------------------------------------------


def test_a_new_key_keeps_the_key_header_and_the_bridge(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    add_keyed(user_env, server, WRONG_KEY, "--bridge")
    assert check_code(user_env, "peer") == 1

    out = ok(user_env, "add", "peer", "-k", server.key)
    assert out.splitlines()[1:] == ["  API key replaced"]  # one line per change, and nothing else changed
    assert "updated peer in" in out and "(through `chctl bridge`)" in out
    assert binding_modes(user_env, "peer") == ["bridge"]
    assert ok(user_env, "token", "peer", "--header").strip() == f"X-API-Key: {server.key}"
    assert check_code(user_env, "peer") == 0


@pytest.mark.parametrize("hinted_by", ["check", "auth"])
def test_the_hint_after_a_refused_key_leads_back_to_a_working_server(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory, hinted_by: str
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    add_keyed(user_env, server, WRONG_KEY, "--bridge")
    said = chctl(user_env, hinted_by, "peer")
    assert said.returncode != 0
    command = re.search(r"`(chctl add peer[^`]*)`", said.stdout + said.stderr)
    assert command is not None, said.stdout + said.stderr
    argv = command.group(1).split()[1:]
    # The hint's placeholders, filled in as the person would: the key itself, or a variable that holds it.
    argv = [server.key if word == "KEY" else "PEER_KEY" if word == "VAR" else word for word in argv]
    ok(user_env, *argv, extra_env={"PEER_KEY": server.key})
    assert check_code(user_env, "peer") == 0
    assert binding_modes(user_env, "peer") == ["bridge"]


def test_add_says_what_it_changed_one_line_each(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    assert "API key stored" in add_keyed(user_env, server, server.key)
    config = str((user_env.project / "opencode.json").resolve())
    assert ok(user_env, "add", "peer", "--mode", "bridge").splitlines()[1:] == [f"  mode: header → bridge ({config})"]
    changed = ok(user_env, "add", "peer", "-k", WRONG_KEY, "--key-header", "Authorization").splitlines()[1:]
    assert changed == ["  API key replaced", "  key header: X-API-Key → Authorization: Bearer"]
    assert ok(user_env, "add", "peer").splitlines()[1:] == ["  nothing changed"]


def test_added_again_without_client_it_goes_to_the_clients_recorded(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    ok(
        user_env,
        "add",
        "peer",
        "--client",
        "claude-code",
        "--url",
        server.url,
        "-k",
        WRONG_KEY,
        "--key-header",
        "X-API-Key",
    )  # noqa: E501
    assert not (user_env.project / "opencode.json").exists()  # this directory has no opencode config
    out = ok(user_env, "add", "peer", "-k", server.key)
    assert f"updated peer in {(user_env.home / '.claude.json').resolve()}" in out
    assert not (user_env.project / "opencode.json").exists()
    assert check_code(user_env, "peer") == 0


# --- §2: a server that wants a login says so until it has one -------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--bridge"]], ids=["header", "bridge"])
def test_a_server_asking_for_oauth_needs_a_login_until_one_is_stored_and_after_logout(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer, flags: list[str]
) -> None:
    ok(user_env, "init")
    out = ok(user_env, "add", "oauth3", "--url", mcp_oauth_server.url, *flags)
    assert out.splitlines()[-1].startswith("next: run `chctl auth oauth3`")
    row = status_of(user_env, "oauth3")
    assert (row["state"], row["auth_type"], row["usable"]) == ("pending_auth", "oauth", False)
    assert "needs login → chctl auth oauth3" in status_line(user_env, "oauth3")
    assert doctor_lines(user_env, "oauth3") == ["! oauth3: not logged in yet\n  hint: run `chctl auth oauth3`"]

    ok(user_env, "auth", "oauth3", extra_env=BROWSER)
    assert (status_of(user_env, "oauth3")["state"], check_code(user_env, "oauth3")) == ("active", 0)

    ok(user_env, "auth", "oauth3", "--logout")
    assert status_of(user_env, "oauth3")["state"] == "pending_auth"
    assert "needs login → chctl auth oauth3" in status_line(user_env, "oauth3")


def test_doctor_asks_a_server_nothing_was_recorded_for_and_says_one_thing(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    ok(user_env, "init")
    ok(user_env, "add", "oauth3", "--url", mcp_oauth_server.url, "--bridge")
    # As an older version recorded it (or the server was down at `add`): nothing says how it authenticates.
    bindings = user_env.ch_home / "bindings.json"
    recorded = json.loads(bindings.read_text())
    for binding in recorded["oauth3"]:
        binding.pop("auth", None)
    bindings.write_text(json.dumps(recorded))
    assert doctor_lines(user_env, "oauth3") == [
        "! oauth3 answers 401 Unauthorized without credentials\n"
        "  hint: run `chctl auth oauth3` (OAuth) or `chctl add oauth3 -k KEY` (API key)"
    ]


def test_a_server_answering_401_without_oauth_needs_a_key(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    ok(user_env, "init")
    no_key = chctl(user_env, "add", "peer", "--url", server.url, "--key-header", "X-API-Key")
    assert no_key.returncode != 0 and "error[AUTH_REQUIRED]" in no_key.stderr  # a key header needs its key
    out = ok(user_env, "add", "peer", "--url", server.url)
    assert out.splitlines()[-1].startswith("next: peer answers 401") and "`chctl add peer -k KEY`" in out
    assert status_of(user_env, "peer")["state"] == "needs_key"
    assert "needs a key → chctl add peer -k KEY" in status_line(user_env, "peer")
    ok(user_env, "add", "peer", "-k", server.key, "--key-header", "X-API-Key")
    assert (status_of(user_env, "peer")["state"], check_code(user_env, "peer")) == ("api_key", 0)


async def test_a_server_that_never_finishes_its_answer_costs_add_a_bounded_wait_and_gets_no_secret(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    """The probe at `add` is a new request to a server nobody vouches for: it answers 200 and then trickles
    its stream forever. The add still finishes (the probe has a deadline), records nothing, sends nothing."""
    seen: list[dict[str, str]] = []

    async def trickle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            await response.write(b": still here\n\n")
            await asyncio.sleep(0.5)

    async with serve(one_route(trickle)) as base:
        await asyncio.to_thread(ok, user_env, "init")
        out = await asyncio.to_thread(ok, user_env, "add", "slow", "--url", f"{base}/mcp")
        assert "next:" not in out  # it said nothing about what it wants: nothing is recorded
        row = await asyncio.to_thread(status_of, user_env, "slow")
        assert row["state"] == "no_auth"
    assert seen and all("Authorization" not in headers for headers in seen)


# --- §3: a key is not a login ----------------------------------------------------------------------------------


def test_logout_of_an_api_key_server_keeps_the_key_and_says_how_to_change_or_remove_it(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    add_keyed(user_env, server, server.key)
    done = chctl(user_env, "auth", "peer", "--logout")
    assert done.returncode != 0 and "error[INVALID_PARAMS]" in done.stderr
    assert "--logout would delete the key" in done.stderr
    assert "`chctl add peer -k KEY`" in done.stderr and "`chctl remove peer --forget`" in done.stderr
    assert (user_env.ch_home / "tokens" / "peer.json").exists()
    row = status_of(user_env, "peer")
    assert (row["state"], row["auth_type"], row["usable"]) == ("api_key", "api-key", True)
    assert check_code(user_env, "peer") == 0


def test_a_stored_key_clears_a_failed_login(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    ok(user_env, "init")
    ok(user_env, "add", "peer", "--url", server.url)
    failed = chctl(user_env, "auth", "peer", extra_env=BROWSER)  # it has no OAuth: the login cannot start
    assert failed.returncode != 0
    assert (status_of(user_env, "peer")["last_error"] or "").startswith("login failed")
    ok(user_env, "add", "peer", "-k", server.key, "--key-header", "X-API-Key")
    row = status_of(user_env, "peer")
    assert (row["state"], row["last_error"]) == ("api_key", None)


# --- §5: what the server refuses shows until a request succeeds ---------------------------------------------


def test_a_refused_key_shows_in_status_and_doctor_until_a_request_succeeds(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(header="X-API-Key")
    add_keyed(user_env, server, WRONG_KEY, "--bridge")
    assert status_of(user_env, "peer")["refused"] is None  # nothing has been sent yet

    async def bridged_initialize() -> str:
        try:
            async with bridged_session(user_env, "peer"):
                return "initialized"
        except Exception as exc:  # the relay's JSON-RPC error, which the SDK client wraps in task groups
            return messages_of(exc)

    said = asyncio.run(bridged_initialize())
    assert "refused the API key" in said, said
    row = status_of(user_env, "peer")
    assert (row["refused"], row["usable"]) == (401, False)
    assert row["last_error"] == "the server refuses the API key (401 Unauthorized)"
    assert "key refused (401) → chctl add peer -k KEY" in status_line(user_env, "peer")
    [line] = doctor_lines(user_env, "peer")
    assert line.startswith("✗ peer: the server refuses the API key") and "`chctl add peer -k KEY`" in line
    assert chctl(user_env, "auth", "peer", "--status").returncode == 1  # not usable

    # Another process stores the right key (the file is the truth); the next request that succeeds clears it.
    store = TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets")
    stored = store.load("peer")
    assert stored is not None
    store.save(stored.model_copy(update={"api_key": server.key}))
    assert status_of(user_env, "peer")["refused"] == 401  # still: no request has succeeded yet
    assert check_code(user_env, "peer") == 0
    row = status_of(user_env, "peer")
    assert (row["refused"], row["usable"], row["last_error"]) == (None, True, None)
    assert "ok (API key)" in status_line(user_env, "peer")


async def test_a_key_the_server_forbids_shows_as_forbidden_in_status_and_doctor(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    """A gateway that knows the key but forbids what it is asked (403, no scope challenge: a step-up login
    cannot help): status and doctor say so, and `auth --status` calls the key unusable."""
    seen: list[str] = []

    async def forbid(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("X-API-Key", ""))
        return web.json_response({"error": "forbidden", "error_description": "this key may not use MCP"}, status=403)

    async with serve(one_route(forbid)) as base:
        await asyncio.to_thread(ok, user_env, "init")
        args = ("add", "peer", "--url", f"{base}/mcp", "-k", "k-gate", "--key-header", "X-API-Key", "--bridge")
        await asyncio.to_thread(ok, user_env, *args)
        assert await asyncio.to_thread(check_code, user_env, "peer") == 1
    assert seen and set(seen) == {"k-gate"}
    row = await asyncio.to_thread(status_of, user_env, "peer")
    assert (row["refused"], row["usable"]) == (403, False)
    assert row["last_error"] == "the server answers 403 Forbidden to the API key: it is not allowed what was asked"
    assert "forbidden (403) → chctl check peer" in await asyncio.to_thread(status_line, user_env, "peer")
    [line] = await asyncio.to_thread(doctor_lines, user_env, "peer")
    assert line.startswith("✗ peer: the server answers 403 Forbidden") and "`chctl check peer`" in line
    assert (await asyncio.to_thread(chctl, user_env, "auth", "peer", "--status")).returncode == 1


# --- §9: the header of an add right after a start waits for the start-up repair --------------------------------

BOUND = 6  # servers the start-up repair writes, one after the other, into the big config
FILLER = 5000  # entries that make each read of that config take a while (about a second here)


def big_config_with_keyed_servers(user_env: UserEnv) -> Path:
    """opencode.json with FILLER local entries and BOUND API-key servers whose header is already written, all
    bound and stored as `chctl add` leaves them: the start-up repair reads the file once per server."""
    config = user_env.project / "opencode.json"
    tokens = TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets")
    bindings = BindingStore(user_env.ch_home / "bindings.json")
    mcp: dict[str, Any] = {f"filler{i}": {"type": "local", "command": ["true", str(i)]} for i in range(FILLER)}
    for i in range(BOUND):
        url, key = f"http://127.0.0.1:9/mcp{i}", f"k-bound-{i}"
        name = f"bound{i}"
        mcp[name] = {"type": "remote", "url": url, "headers": {"Authorization": f"Bearer {key}"}, "oauth": False}
        tokens.save(Credential(name=name, kind="api_key", state=TokenState.API_KEY, api_key=key, server_url=url))
        bindings.bind(name, Binding(path=str(config.resolve()), url=url))
    config.write_text(json.dumps({"$schema": "https://opencode.ai/config.json", "mcp": mcp}, indent=2))
    config.chmod(0o600)
    return config


def test_add_right_after_a_start_writes_its_header_after_the_repair(user_env: UserEnv) -> None:
    user_env.ch_home.mkdir(mode=0o700, exist_ok=True)
    config = big_config_with_keyed_servers(user_env)
    # A generous deadline: the point is the order of the writes, not how fast a loaded machine parses.
    daemon = DaemonProcess(user_env, extra_env={"CH_CONFIG_IO_TIMEOUT_S": "300"}).start()
    try:
        done = chctl(user_env, "add", "fresh", "--url", "http://127.0.0.1:9/fresh", "-k", "k-fresh", timeout=600)
        assert done.returncode == 0, done.stderr
        assert "NOT written" not in done.stderr
        entry = json.loads(config.read_text())["mcp"]["fresh"]
        assert entry["headers"] == {"Authorization": "Bearer k-fresh"}  # written before `add` returned
        events = daemon.log_events()
        repaired = [e for e in events if e.get("event") == "config_write_failed"]
        assert repaired == []
        assert status_of(user_env, "fresh")["config_errors"] == {}
    finally:
        daemon.stop()
