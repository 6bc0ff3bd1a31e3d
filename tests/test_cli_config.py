"""chctl + the real daemon + the real opencode: configs we write are ones opencode accepts, and nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.opencode import debug_config

COMMENTED = """{
  // team config: keep these comments
  "$schema": "https://opencode.ai/config.json",
  /* the model we use */
  "model": "anthropic/claude-sonnet-4",
  "mcp": {
    // docs search
    "docs": {"type": "remote", "url": "https://docs.example.com/mcp", "enabled": false},
  },
  "theme": "dark", // trailing comment
}
"""


def write(path: os.PathLike[str], text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def test_init_creates_schema_and_empty_mcp_0644_and_leaves_an_existing_file_alone(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    done = chctl(user_env, "init")
    assert done.returncode == 0, done.stderr
    path = user_env.project / "opencode.json"
    assert json.loads(path.read_text()) == {"$schema": "https://opencode.ai/config.json", "mcp": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    write(path, COMMENTED)
    assert chctl(user_env, "init").returncode == 0
    assert path.read_text() == COMMENTED


def test_global_init_and_add_use_xdg_config_home(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init", "--global").returncode == 0
    done = chctl(user_env, "add", "exa", "--global")
    assert done.returncode == 0, done.stderr
    written = json.loads((user_env.global_config_dir / "opencode.json").read_text())
    assert written["mcp"]["exa"]["type"] == "remote"


def test_without_a_config_commands_say_config_missing_and_to_run_init(daemon: DaemonProcess, user_env: UserEnv) -> None:
    for args in (["list"], ["add", "exa"], ["remove", "exa"]):
        done = chctl(user_env, *args)
        assert done.returncode != 0
        assert "error[CONFIG_MISSING]" in done.stderr
        assert "chctl init" in done.stderr


def test_nearest_config_is_found_walking_up_to_the_git_root(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    nested = user_env.project / "src" / "pkg"
    nested.mkdir(parents=True)
    done = chctl(user_env, "add", "exa", cwd=nested)
    assert done.returncode == 0, done.stderr
    assert "exa" in json.loads((user_env.project / "opencode.json").read_text())["mcp"]


def test_unknown_server_is_not_found_with_close_names(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    done = chctl(user_env, "add", "contex7")
    assert done.returncode != 0
    assert "error[NOT_FOUND]" in done.stderr
    assert "context7" in done.stderr


def test_api_key_server_without_a_key_needs_auth_and_writes_nothing(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    before = (user_env.project / "opencode.json").read_bytes()
    done = chctl(user_env, "add", "context7")
    assert done.returncode != 0
    assert "error[AUTH_REQUIRED]" in done.stderr
    assert (user_env.project / "opencode.json").read_bytes() == before
    missing = chctl(user_env, "add", "context7", "--api-key-env", "NOT_SET_ANYWHERE")
    assert "error[AUTH_REQUIRED]" in missing.stderr and "NOT_SET_ANYWHERE" in missing.stderr


def test_remote_local_and_api_key_entries_are_what_opencode_reads(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    assert chctl(user_env, "add", "exa").returncode == 0
    assert (
        chctl(
            user_env,
            "add",
            "files",
            "--command",
            "npx -y @modelcontextprotocol/server-filesystem '/srv/my docs'",
            "--env",
            "LOG=debug",
        ).returncode
        == 0
    )
    done = chctl(user_env, "add", "context7", "--api-key-env", "C7", extra_env={"C7": "ctx7-key-not-real"})
    assert done.returncode == 0, done.stderr
    assert (
        chctl(user_env, "add", "custom", "--url", "http://127.0.0.1:9/mcp", "--header", "X-Team=core").returncode == 0
    )

    mcp = debug_config(user_env)["mcp"]
    assert mcp["exa"] == {"type": "remote", "url": "https://mcp.exa.ai/mcp"}
    assert mcp["files"] == {
        "type": "local",
        "command": ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv/my docs"],
        "environment": {"LOG": "debug"},
    }
    assert mcp["context7"]["url"] == "https://mcp.context7.com/mcp"
    assert mcp["context7"]["oauth"] is False
    assert set(mcp["context7"]["headers"]) == {"CONTEXT7_API_KEY"}  # opencode masks the value
    assert mcp["custom"]["headers"] == {"X-Team": "***"}  # masked too
    written = json.loads((user_env.project / "opencode.json").read_text())
    assert written["mcp"]["context7"]["headers"] == {"CONTEXT7_API_KEY": "ctx7-key-not-real"}
    assert written["mcp"]["custom"]["headers"] == {"X-Team": "core"}


def test_edits_keep_comments_order_and_trailing_commas(daemon: DaemonProcess, user_env: UserEnv) -> None:
    path = user_env.project / "opencode.jsonc"
    write(path, COMMENTED)
    assert chctl(user_env, "add", "exa").returncode == 0
    text = path.read_text()
    head, _, _ = COMMENTED.partition('  },\n  "theme"')
    assert text.startswith(head)  # everything before the end of "mcp" is byte-for-byte the same
    assert text.endswith('  },\n  "theme": "dark", // trailing comment\n}\n')
    assert debug_config(user_env)["mcp"]["docs"]["enabled"] is False
    assert chctl(user_env, "remove", "exa").returncode == 0
    assert path.read_text() == COMMENTED


def test_a_malformed_config_is_never_written_and_the_error_has_line_and_column(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    path = user_env.project / "opencode.json"
    broken = '{\n  "mcp": {\n    "a": {"type": "remote",, "url": "x"}\n  }\n}\n'
    write(path, broken)
    done = chctl(user_env, "add", "exa")
    assert done.returncode != 0
    assert "error[CONFIG_INVALID]" in done.stderr
    assert "line 3, column" in done.stderr
    assert path.read_bytes() == broken.encode()
    assert chctl(user_env, "status").returncode == 0


def test_edit_keeps_the_file_mode_and_writes_through_a_symlink(daemon: DaemonProcess, user_env: UserEnv) -> None:
    real = user_env.home / "dotfiles" / "opencode.json"
    real.parent.mkdir()
    write(real, '{"mcp": {}}\n')
    real.chmod(0o640)
    (user_env.project / "opencode.json").symlink_to(real)
    assert chctl(user_env, "add", "exa").returncode == 0
    assert (user_env.project / "opencode.json").is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert "exa" in json.loads(real.read_text())["mcp"]


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -m (root)")
def test_a_config_directory_that_is_not_writable_is_reported(user_env: UserEnv) -> None:
    """The daemon sees the project through a read-only bind mount (root ignores permission bits, not EROFS)."""
    path = user_env.project / "opencode.json"
    write(path, '{"mcp": {}}\n')
    read_only = [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
        "sh",
        str(user_env.project),
    ]
    process = DaemonProcess(user_env, wrapper=read_only).start()
    try:
        done = chctl(user_env, "add", "exa")
        assert done.returncode != 0
        assert "error[PERMISSION_DENIED]" in done.stderr, done.stderr
        assert path.read_bytes() == b'{"mcp": {}}\n'
        assert chctl(user_env, "status").returncode == 0
    finally:
        process.stop()


def test_remove_of_an_absent_entry_is_not_found(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    done = chctl(user_env, "remove", "exa")
    assert "error[NOT_FOUND]" in done.stderr


def test_seed_spelling_context_harness_mcp_add_still_works(daemon: DaemonProcess, user_env: UserEnv) -> None:
    chctl(user_env, "init")
    assert chctl(user_env, "mcp", "add", "exa").returncode == 0
    listed = json.loads(chctl(user_env, "mcp", "list", "--json").stdout)
    assert listed["servers"]["exa"]["url"] == "https://mcp.exa.ai/mcp"


@pytest.mark.parametrize("mode", ["inline", "file"])
def test_status_json_lists_servers_with_bound_configs(daemon: DaemonProcess, user_env: UserEnv, mode: str) -> None:
    chctl(user_env, "init")
    chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real", "--secret-mode", mode)
    status = json.loads(chctl(user_env, "status", "--json").stdout)
    assert status["daemon"]["pid"] == daemon.proc.pid
    [row] = status["servers"]
    assert row == {
        "name": "context7",
        "auth_type": "api-key",
        "state": "api_key",
        "usable": True,
        "expires_at": None,
        "has_refresh_token": False,
        "scopes": None,
        "issuer": None,
        "next_refresh_at": None,
        "configs": [str((user_env.project / "opencode.json").resolve())],
        "config_errors": {},
        "url_changed": [],
        "url_unrecorded": False,
        "mode": "header",
        "bridges": [],
        "last_error": None,
        "refused": None,
        "note": None,
        "token_reads": 0,
        "last_token_read_at": None,
        "shared": False,
        "via": None,
        "login": None,  # an API key: no kind of login
        "idp": None,
        "fix": None,
        "scopes_wanted": [],
        # CH_SECRET_STORE=file (the tests' default): the token file, and the config or the `{file:}` file.
        "secret_at": [
            {"where": "token_file", "path": str(user_env.ch_home / "tokens" / "context7.json"), "problem": None},
            {
                "where": "config",
                "path": str((user_env.project / "opencode.json").resolve()),
                "client": "opencode",
                "problem": None,
            }
            if mode == "inline"
            else {
                "where": "secret_file",
                "path": str(user_env.ch_home / "secrets" / "context7.token"),
                "problem": None,
            },
        ],
    }
    table = chctl(user_env, "status").stdout
    assert "context7" in table and "ok (API key)" in table


def test_a_missing_key_is_asked_for_with_a_hidden_prompt_on_a_terminal(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    import pty
    import select
    import sys
    import time

    chctl(user_env, "init")
    pid, master = pty.fork()
    if pid == 0:  # the child: chctl on a real terminal
        os.chdir(user_env.project)
        env = {**user_env.vars(), "CH_NO_AUTOSTART": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "context_harness.client.chctl", "add", "context7"], env)
    output = b""
    deadline = time.monotonic() + 30
    while b"API key for context7" not in output and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            output += os.read(master, 1024)
    assert b"API key for context7" in output
    os.write(master, b"typed-key-not-real\n")
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"typed-key-not-real" not in output  # not echoed
    written = json.loads((user_env.project / "opencode.json").read_text())
    assert written["mcp"]["context7"]["headers"] == {"CONTEXT7_API_KEY": "typed-key-not-real"}
