"""`chctl status`, `chctl registry` and `chctl doctor` read at a glance: words, colour on a terminal only,
tables that fit it, and doctor's exit status by the worst finding."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from context_harness.client import states
from context_harness.primitives.mcp import MCPAuthType
from context_harness.services.doctor import server_checks
from context_harness.services.status import ServerStatus
from context_harness.stores.bindings import Binding, BindingStore
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.ports import closed_port
from tests.support.terminal import Terminal

GREEN, RED, RESET = "\x1b[32m", "\x1b[31m", "\x1b[0m"


def on_terminal(user_env: UserEnv, *args: str, columns: int = 160, **extra_env: str) -> str:
    term = Terminal(user_env, *args, columns=columns, extra_env=extra_env)
    try:
        assert term.wait() == 0, term.output
    finally:
        term.close()
    return term.output.replace("\r\n", "\n")


@pytest.fixture
def two_servers(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real").returncode == 0
    assert chctl(user_env, "add", "linear").returncode == 0


def test_status_on_a_terminal_says_states_in_colour(two_servers: None, user_env: UserEnv) -> None:
    shown = on_terminal(user_env, "status")
    assert f"{GREEN}ok (API key){RESET}" in shown
    assert f"{RED}needs login → chctl auth linear{RESET}" in shown


def test_no_color_and_a_pipe_turn_colour_off(two_servers: None, user_env: UserEnv) -> None:
    shown = on_terminal(user_env, "status", NO_COLOR="1")
    piped = chctl(user_env, "status").stdout
    for text in (shown, piped):
        assert "needs login → chctl auth linear" in text and "ok (API key)" in text
        assert "\x1b[" not in text


def test_the_registry_table_fits_the_terminal_and_a_pipe_gets_it_whole(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    shown = on_terminal(user_env, "registry", columns=80)
    lines = [line for line in shown.splitlines() if line.strip()]
    assert len(lines) > 5 and all(len(line) <= 80 for line in lines), shown
    assert "…" in shown

    registry = json.loads(chctl(user_env, "registry", "--json").stdout)["servers"]
    longest = max(registry, key=lambda s: len(s.get("description", "")))["description"]
    piped = chctl(user_env, "registry").stdout
    assert longest in piped and "…" not in piped


def test_status_words_for_every_state() -> None:
    now = time.time()
    row = {"name": "linear", "expires_at": now + 720, "next_refresh_at": now + 40, "has_refresh_token": True}
    cases = {
        "pending_auth": ("needs login → chctl auth linear", "red"),
        "needs_reauth": ("needs login → chctl auth linear", "red"),
        "refreshing": ("refreshing…", "yellow"),
        "active": ("ok", "green"),
        "api_key": ("ok (API key)", "green"),
        "no_auth": ("ok (no auth)", "green"),
        "needs_key": ("needs a key → chctl add linear -k KEY", "red"),
    }
    for state, expected in cases.items():
        assert states.describe({**row, "state": state}, now) == expected
    # A credential the server refuses is red whatever its stored state says, with what mends it.
    refused_key = {**row, "state": "api_key", "auth_type": "api-key", "refused": 401}
    assert states.describe(refused_key, now) == ("key refused (401) → chctl add linear -k KEY", "red")
    refused_token = {**row, "state": "active", "auth_type": "oauth", "refused": 401}
    assert states.describe(refused_token, now) == ("token refused (401) → chctl auth linear", "red")
    forbidden = {**row, "state": "active", "auth_type": "oauth", "refused": 403}
    assert states.describe(forbidden, now) == ("forbidden (403) → chctl check linear", "red")
    retrying = {**row, "state": "retrying", "last_error": "HTTP 503"}
    assert states.describe(retrying, now) == ("retrying (next try in 40s): HTTP 503", "yellow")
    no_refresh = {**row, "state": "active", "has_refresh_token": False}
    assert states.describe(no_refresh, now) == ("expires in 12m, no refresh token", "yellow")


def test_doctor_has_a_verdict_for_every_server_state() -> None:
    now = time.time()
    rows = [
        ServerStatus(name="a", state="pending_auth"),
        ServerStatus(name="b", state="needs_reauth", last_error="invalid_grant"),
        ServerStatus(name="c", state="retrying", last_error="HTTP 503"),
        ServerStatus(name="d", state="active", expires_at=now + 600, has_refresh_token=False),
        ServerStatus(name="e", state="active", expires_at=now + 600, has_refresh_token=True),
        ServerStatus(name="f", state="api_key"),
        ServerStatus(name="g", state="api_key", auth_type=MCPAuthType.API_KEY, refused=401, last_error="refused"),
        ServerStatus(name="h", state="needs_key", auth_type=MCPAuthType.API_KEY),
        ServerStatus(name="i", state="no_auth"),
        ServerStatus(name="j", state="no_auth"),
    ]
    checks = server_checks(rows, now, answer_401={"j"})
    found = {c.message.split(":")[0].split(" ")[0]: c for c in checks}
    assert {n: c.level for n, c in found.items()} == {
        "a": "warn",
        "b": "error",
        "c": "warn",
        "d": "warn",
        "e": "ok",
        "f": "ok",
        "g": "error",
        "h": "warn",
        "i": "ok",
        "j": "warn",  # one verdict: it answers 401, not also "needs no credential"
    }
    assert len(checks) == len(rows)
    assert found["g"].hint is not None and "`chctl add g -k KEY`" in found["g"].hint
    assert "answers 401" in found["j"].message
    assert found["a"].hint == "run `chctl auth a`" and "invalid_grant" in found["b"].message
    assert "expires in 10 min" in found["d"].message


def write_credential(user_env: UserEnv, name: str, **fields: object) -> None:
    """A stored OAuth credential as the daemon keeps it (tokens/<name>.json, 0600)."""
    user_env.ch_home.mkdir(mode=0o700, exist_ok=True)  # as the daemon makes it: doctor reports any other mode
    tokens = user_env.ch_home / "tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    path = tokens / f"{name}.json"
    path.write_text(json.dumps({"name": name, "kind": "oauth", "state": "active", **fields}))
    os.chmod(path, 0o600)


def write_needs_reauth(user_env: UserEnv, name: str) -> None:
    expired = {"access_token": "expired-token-not-real", "expires_at": time.time() - 60}
    write_credential(user_env, name, state="needs_reauth", tokens=expired, last_error="invalid_grant")


def test_status_and_doctor_say_retrying_and_no_refresh_token_in_words(user_env: UserEnv) -> None:
    # Written before the daemon starts: it refreshes what is due at once, and the token endpoint is closed.
    now = time.time()
    write_credential(
        user_env,
        "flaky",
        tokens={
            "access_token": "at-not-real",
            "refresh_token": "rt-not-real",
            "issued_at": now - 3600,  # an hour-long token with half a minute left: due for a refresh
            "expires_at": now + 30,
        },
        token_endpoint=f"http://127.0.0.1:{closed_port()}/token",
        client_id="client-not-real",
        server_url="http://127.0.0.1:9/mcp",
    )
    short = {"access_token": "at2-not-real", "expires_at": now + 725}
    write_credential(user_env, "short", tokens=short, server_url="http://127.0.0.1:9/mcp")
    # Both carried by a config: the daemon refreshes only servers some config still uses.
    config = user_env.project / "opencode.json"
    remote = {"type": "remote", "url": "http://127.0.0.1:9/mcp", "oauth": False}
    config.write_text(json.dumps({"mcp": {"flaky": remote, "short": remote}}))
    bindings = BindingStore(user_env.ch_home / "bindings.json")
    for name in ("flaky", "short"):
        bindings.bind(name, Binding(path=str(config.resolve()), url=remote["url"]))
    daemon = DaemonProcess(user_env, extra_env={"CH_BACKOFF_BASE_S": "60"}).start()
    try:
        wait_for(lambda: "retrying" in chctl(user_env, "status").stdout, 20, what="the refresh to fail and be retried")
        shown = chctl(user_env, "status").stdout
        assert re.search(r"retrying \(next try in \d+s\): cannot reach 127\.0\.0\.1:\d+/token", shown), shown
        assert re.search(r"expires in 1[12]m, no refresh token", shown), shown
        doctor = chctl(user_env, "doctor")
        assert doctor.returncode == 1, doctor.stdout
        assert "! flaky: refresh failing, retrying (cannot reach" in doctor.stdout
        assert "! short: no refresh token was issued; the token expires in 12 min" in doctor.stdout
    finally:
        daemon.stop()


def test_doctor_exits_0_when_well_1_on_warnings_2_on_errors(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real", "--secret-mode", "file").returncode == 0
    assert chctl(user_env, "doctor").returncode == 0

    assert chctl(user_env, "add", "linear").returncode == 0
    done = chctl(user_env, "doctor")
    assert done.returncode == 1
    assert "! linear: not logged in yet\n  hint: run `chctl auth linear`\n" in done.stdout

    write_needs_reauth(user_env, "linear")
    done = chctl(user_env, "doctor")
    assert done.returncode == 2
    assert re.search(r"✗ linear needs a new login \(invalid_grant\)\n  hint: run `chctl auth linear`", done.stdout)
