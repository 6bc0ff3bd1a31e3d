"""A person's save that lands while we write a config is never overwritten: the "changed since read" check
runs after our temp file is written and fsynced, right before the rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from context_harness.config.jsonc import parse_jsonc
from context_harness.config.opencode import FORMAT as OPENCODE
from context_harness.primitives.result import Success
from context_harness.services.config_service import ConfigService
from context_harness.stores import atomic

BEFORE = '{\n  "mcp": {"srv": {"type": "remote", "url": "https://example.com/mcp"}}\n}\n'
EDITED = '{\n  "theme": "dark",\n  "mcp": {"srv": {"type": "remote", "url": "https://example.com/mcp"}}\n}\n'


def test_a_save_made_while_our_temp_file_is_fsynced_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "opencode.json"
    path.write_text(BEFORE)
    real_fsync = os.fsync
    saves: list[str] = []

    def fsync_while_the_editor_saves(fd: int) -> None:
        if not saves:  # the first fsync is our temp file's: that is when the person presses save
            saves.append(EDITED)
            path.write_text(EDITED)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_while_the_editor_saves)
    written = ConfigService().set_header(
        path, "srv", "Authorization", "Bearer new-token", OPENCODE, url="https://example.com/mcp"
    )
    assert isinstance(written, Success)
    document = parse_jsonc(path.read_text())
    assert document["theme"] == "dark"  # the person's save survived...
    assert document["mcp"]["srv"]["headers"]["Authorization"] == "Bearer new-token"  # ...and ours is on top
