"""The notifier across a reload: removing CH_NOTIFY_COMMAND goes back to the desktop default."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings
from context_harness.primitives.oauth import TokenEvent


def _recorder(path: Path, executable: Path | None = None) -> list[str]:
    """A command that appends CH_SERVER/CH_STATE and its arguments to `path`, one JSON line per run."""
    code = (
        "import json,os,sys; open(sys.argv[1],'a').write(json.dumps({'server': os.environ.get('CH_SERVER'), "
        "'state': os.environ.get('CH_STATE'), 'argv': sys.argv[2:]})+'\\n')"
    )
    if executable is None:
        return [sys.executable, "-c", code, str(path)]
    script = executable.with_suffix(".py")
    script.write_text(code)
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "{path}" "$@"\n')
    executable.chmod(0o755)
    return [str(executable)]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _eventually_lines(path: Path, timeout_s: float = 10.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while not (lines := _lines(path)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path.name}")
        await asyncio.sleep(0.02)
    return lines


async def test_a_reload_without_the_notify_command_goes_back_to_the_desktop_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    desktop_log, custom_log = tmp_path / "desktop.log", tmp_path / "custom.log"
    _recorder(desktop_log, bin_dir / "notify-send")  # the desktop default found on PATH
    monkeypatch.setenv("PATH", f"{bin_dir}")
    settings = Settings(home=tmp_path / "ch", notify_command=_recorder(custom_log))
    services = build_services(settings)
    try:
        services.configure(Settings(home=tmp_path / "ch"))  # CH_NOTIFY_COMMAND removed, then SIGHUP
        services.notifier.token_event("srv", TokenEvent.NEEDS_REAUTH, "log in again")
        [note] = await _eventually_lines(desktop_log)
        await services.notifier.drain()
        assert note == {
            "server": "srv",
            "state": "needs_reauth",
            "argv": ["--app-name=context-harness", "context-harness", "log in again"],
        }
        assert _lines(custom_log) == []  # the removed command no longer runs
    finally:
        await services.close()
