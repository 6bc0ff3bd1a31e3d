"""Every chctl error ends with a hint line that names the server and the command (and flags) that help."""

from __future__ import annotations

import io
import json

from context_harness.client.output import print_error, print_hint
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.ports import closed_port


def hint_of(stderr: str) -> str:
    [hint] = [line for line in stderr.splitlines() if line.startswith("  hint: ")]
    return hint


def test_a_network_error_hints_at_the_server_and_is_the_last_error_in_status(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "srv", "--url", f"http://127.0.0.1:{closed_port()}/mcp").returncode == 0
    done = chctl(user_env, "auth", "srv", "--no-browser", input="")
    assert done.returncode == 1
    assert done.stderr.startswith("error[NETWORK]: ")
    assert "`chctl auth srv`" in hint_of(done.stderr)

    [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
    assert row["name"] == "srv" and row["last_error"].startswith("login failed: ")


def test_list_global_without_a_global_config_hints_init_global(daemon: DaemonProcess, user_env: UserEnv) -> None:
    done = chctl(user_env, "list", "--global")
    assert "error[CONFIG_MISSING]" in done.stderr
    assert "`chctl init --global`" in hint_of(done.stderr)


def test_refresh_of_a_server_that_never_logged_in_hints_auth(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    assert chctl(user_env, "add", "linear").returncode == 0
    done = chctl(user_env, "refresh", "linear")
    assert done.returncode == 1
    assert "error[NOT_FOUND]" in done.stderr
    assert "`chctl auth linear`" in hint_of(done.stderr)


def test_auth_of_an_api_key_or_no_auth_server_says_no_login_is_needed_without_discovery(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    # The tests have no network: discovery would end in error[NETWORK], not in these answers.
    chctl(user_env, "init")
    cases = {
        "exa": ("exa needs no login", "`chctl add exa`"),
        "context7": ("context7 takes an API key, not a login", "`chctl add context7 --api-key-env VAR`"),
    }
    for name, (message, hint) in cases.items():
        done = chctl(user_env, "auth", name)
        assert done.returncode == 1
        assert done.stderr.startswith(f"error[INVALID_PARAMS]: {message}")
        assert hint in hint_of(done.stderr)

    assert chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real").returncode == 0
    done = chctl(user_env, "auth", "context7")
    assert done.stderr.startswith("error[INVALID_PARAMS]: context7 uses an API key: there is no login")
    assert "--api-key-env" in hint_of(done.stderr)
    assert not any(e.get("event", "").startswith("http") for e in daemon.log_events())


def test_an_error_without_a_hint_of_its_own_still_gets_one() -> None:
    for code in ("NETWORK", "INTERNAL", "STATE_MISMATCH"):
        err = io.StringIO()
        assert print_error(code, "something failed", None, file=err) == 1
        first, hint = err.getvalue().splitlines()
        assert first == f"error[{code}]: something failed"
        assert hint.startswith("  hint: ") and len(hint) > len("  hint: ")


def test_a_hint_is_one_indented_line_with_no_control_characters() -> None:
    out = io.StringIO()
    print_hint("run \x1b]0;title\x07`chctl auth srv`", file=out)
    assert out.getvalue() == "  hint: run ]0;title`chctl auth srv`\n"
