"""Text from a config shown by `chctl list` and `chctl status` carries no Unicode format characters: a bidi
override (U+202E) in a planted entry would show its name or URL reversed, a zero-width one would hide a
difference between two names."""

from __future__ import annotations

import json

from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv

RLO, ZWSP, LRI, PDI = "\u202e", "\u200b", "\u2066", "\u2069"
FORMAT_CHARACTERS = (RLO, ZWSP, LRI, PDI)


def test_list_drops_bidi_overrides_from_config_text(daemon: DaemonProcess, user_env: UserEnv) -> None:
    assert chctl(user_env, "init").returncode == 0
    assert chctl(user_env, "add", "context7", "-k", "ctx7-key-not-real").returncode == 0
    config = user_env.project / "opencode.json"
    document = json.loads(config.read_text())
    document["mcp"][f"wiki{RLO}lmth.exe"] = {"type": "remote", "url": f"https://wiki.example/{LRI}mcp{PDI}{ZWSP}"}
    document["mcp"]["context7"]["url"] += RLO  # the bound entry, as status shows it
    config.write_text(json.dumps(document))
    listed = chctl(user_env, "list")
    assert listed.returncode == 0, listed.stderr
    assert not any(c in listed.stdout for c in FORMAT_CHARACTERS), listed.stdout
    assert "wikilmth.exe" in listed.stdout and "https://wiki.example/mcp" in listed.stdout


def test_status_drops_bidi_overrides_from_a_config_error(daemon: DaemonProcess, user_env: UserEnv) -> None:
    # A project directory named by someone else; its config breaks, and status quotes its path.
    project = user_env.home / f"proj{RLO}txt.exe"
    project.mkdir()
    key = ("-k", "ctx7-key-not-real")
    added = chctl(
        user_env, "add", "context7", *key, "--client", "claude-code", "--mode", "header", "--project", str(project)
    )
    assert added.returncode == 0, added.stderr
    daemon.stop()
    (project / ".mcp.json").write_text("{ not json")
    daemon.start()  # its start mends every bound config, and remembers what it could not write

    def failed() -> str | None:
        done = chctl(user_env, "status")
        return done.stdout if "txt.exe" in done.stdout else None

    shown = wait_for(failed, 20, interval_s=0.2, what="the config error in status")
    assert not any(c in shown for c in FORMAT_CHARACTERS), shown
