"""`ConfigService.edit` in process, on files in tmp_path: the edit lands by one atomic rename that keeps the file's
mode (or takes group and other access away when the new text holds a secret), a file that does not parse is
never written, and a save someone makes between our read and our rename is kept, with our edit re-applied on top
of it. No daemon: the service is called directly."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from context_harness.config.format import ConfigFormat, get_format
from context_harness.primitives.result import ErrorCode, Failure, Success
from context_harness.services.config_service import MAX_EDIT_ATTEMPTS, ConfigService

OPENCODE = get_format("opencode")
ENTRY = {"type": "remote", "url": "https://h/mcp"}

# opencode's JSONC as people annotate it, and what adding `srv` makes of it: every comment where it was.
OPENCODE_BEFORE = '{\n  // keep me\n  "mcp": {\n    "a": {"type": "local", "command": ["x"]} // and me\n  }\n}\n'
OPENCODE_AFTER = (
    '{\n  // keep me\n  "mcp": {\n    "a": {"type": "local", "command": ["x"]}, // and me\n'
    '    "srv": {\n      "type": "remote",\n      "url": "https://h/mcp"\n    }\n  }\n}\n'
)
# Codex's TOML, edited with tomlkit: comments, spacing and order kept, the new table appended.
CODEX_BEFORE = '# mine\nmodel = "o3"  # keep\n\n[mcp_servers.a]\ncommand = "x"  # me too\n'
CODEX_ENTRY = {"url": "https://h/mcp", "http_headers": {"Authorization": "Bearer k"}}
CODEX_AFTER = (
    CODEX_BEFORE + '\n[mcp_servers.srv]\nurl = "https://h/mcp"\nhttp_headers = {Authorization = "Bearer k"}\n\n'
)


def config_file(tmp_path: Path, text: str, mode: int = 0o644, name: str = "opencode.jsonc") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def add_srv(fmt: ConfigFormat, entry: dict[str, object]) -> Callable[[str], str]:
    """The change `put_entry` makes: set the `srv` member, keeping every other byte."""
    return lambda text: fmt.syntax.set(text, fmt.entry_path("srv"), entry)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_an_edit_replaces_the_file_by_rename_and_keeps_its_mode_and_comments(tmp_path: Path) -> None:
    path = config_file(tmp_path, OPENCODE_BEFORE, mode=0o640)
    inode = path.stat().st_ino
    with path.open("rb") as reader:  # someone reading the file while we replace it
        edited = ConfigService().edit(path, add_srv(OPENCODE, ENTRY), OPENCODE)
        assert reader.read() == OPENCODE_BEFORE.encode()  # sees the old bytes whole, never a mix
    assert isinstance(edited, Success)
    assert path.read_text() == OPENCODE_AFTER
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not a write in place
    assert mode_of(path) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opencode.jsonc"]  # no temp file left behind


def test_a_codex_toml_edit_keeps_comments_spacing_and_order(tmp_path: Path) -> None:
    path = config_file(tmp_path, CODEX_BEFORE, mode=0o640, name="config.toml")
    fmt = get_format("codex")
    assert isinstance(ConfigService().edit(path, add_srv(fmt, CODEX_ENTRY), fmt), Success)
    assert path.read_text() == CODEX_AFTER
    assert mode_of(path) == 0o640


@pytest.mark.parametrize(("before", "after"), [(0o644, 0o600), (0o604, 0o600), (0o660, 0o600), (0o755, 0o700)], ids=oct)
def test_an_edit_that_writes_a_secret_takes_group_and_other_access_away(
    tmp_path: Path, before: int, after: int
) -> None:
    path = config_file(tmp_path, OPENCODE_AFTER, mode=before)
    written = ConfigService().set_header(
        path, "srv", "Authorization", "Bearer inline-secret", OPENCODE, url="https://h/mcp", private=True
    )
    assert isinstance(written, Success)
    assert mode_of(path) == after
    assert '"Authorization": "Bearer inline-secret"' in path.read_text()


def test_an_edit_that_writes_no_secret_leaves_the_mode_alone(tmp_path: Path) -> None:
    path = config_file(tmp_path, OPENCODE_AFTER, mode=0o644)
    assert isinstance(ConfigService().set_header(path, "srv", "X-Team", "docs", OPENCODE, url="https://h/mcp"), Success)
    assert mode_of(path) == 0o644


@pytest.mark.parametrize(
    ("client", "text", "change"),
    [
        # The member edit cannot find its way through a file that does not parse.
        ("opencode", '{\n  "mcp": {,}\n}\n', add_srv(OPENCODE, ENTRY)),
        ("codex", '[mcp_servers.a\ncommand = "x"\n', add_srv(get_format("codex"), CODEX_ENTRY)),
        # A change that never looks at the text: what it returns is parsed before anything is written.
        ("opencode", '{\n  "mcp": {,}\n}\n', lambda text: text + "// ours\n"),
        ("codex", 'model = "o3"\nmodel = "o4"\n', lambda text: text + "# ours\n"),
        # A file that parses, and a change whose result would not.
        ("opencode", OPENCODE_BEFORE, lambda text: text.replace("}", "", 1)),
        ("codex", CODEX_BEFORE, lambda text: text + "\n[mcp_servers.a]\n"),
    ],
    ids=[
        "jsonc-bad-file",
        "toml-bad-file",
        "jsonc-bad-file-blind-change",
        "toml-bad-file-blind-change",
        "jsonc-bad-result",
        "toml-bad-result",
    ],
)
def test_a_file_that_does_not_parse_is_never_written(
    tmp_path: Path, client: str, text: str, change: Callable[[str], str]
) -> None:
    path = config_file(tmp_path, text)
    before = path.stat()
    edited = ConfigService().edit(path, change, get_format(client))
    assert isinstance(edited, Failure) and edited.code is ErrorCode.CONFIG_INVALID
    assert str(path) in edited.error and "nothing was written" in (edited.hint or "")
    assert path.read_bytes() == text.encode()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, mode_of(path)) == (before.st_ino, before.st_mtime_ns, 0o644)


def test_an_edit_that_changes_nothing_does_not_touch_the_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, OPENCODE_AFTER)
    before = path.stat()
    assert isinstance(ConfigService().edit(path, add_srv(OPENCODE, ENTRY), OPENCODE), Success)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_edit_writes_through_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    """Dotfile managers link the config into place: the link stays, its target gets the edit."""
    target = config_file(tmp_path, OPENCODE_BEFORE, name="dotfiles-opencode.jsonc")
    link = tmp_path / "opencode.jsonc"
    link.symlink_to(target)
    assert isinstance(ConfigService().edit(link, add_srv(OPENCODE, ENTRY), OPENCODE), Success)
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == OPENCODE_AFTER


# --- a save made by someone else while we edit --------------------------------------------------------------


def save_by_rename(path: Path, text: str) -> None:
    """How most editors save: a new file renamed over the old one (a new inode)."""
    new = path.with_name(path.name + ".editor-save")
    new.write_text(text)
    new.replace(path)


def save_in_place_unnoticed(path: Path, text: str) -> None:
    """A save that only the content gives away: same inode, same size, and the old mtime put back (as `cp -p`,
    a sync tool, or a file system with a coarse clock would leave it)."""
    seen = path.stat()
    assert len(text.encode()) == seen.st_size
    with path.open("r+b") as file:
        file.write(text.encode())
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))


# What the person saves (same length as the file before it, for the in-place save), and the result we expect:
# their change and ours, both in the file.
SAVES = {
    "opencode": (
        OPENCODE_BEFORE,
        OPENCODE_BEFORE.replace("keep me", "KEEP!!!"),
        OPENCODE_AFTER.replace("keep me", "KEEP!!!"),
    ),
    "codex": (CODEX_BEFORE, CODEX_BEFORE.replace('"o3"', '"o4"'), CODEX_AFTER.replace('"o3"', '"o4"')),
}
ENTRIES = {"opencode": ENTRY, "codex": CODEX_ENTRY}


@pytest.mark.parametrize("save", [save_by_rename, save_in_place_unnoticed], ids=["rename", "in-place"])
@pytest.mark.parametrize("client", ["opencode", "codex"])
def test_a_save_made_between_our_read_and_our_rename_is_kept_and_the_edit_reapplied(
    tmp_path: Path, client: str, save: Callable[[Path, str], None]
) -> None:
    before, saved, expected = SAVES[client]
    fmt = get_format(client)
    path = config_file(tmp_path, before, name="config.toml" if client == "codex" else "opencode.jsonc")
    seen_by_change: list[str] = []

    def change_while_the_person_saves(text: str) -> str:
        seen_by_change.append(text)
        if len(seen_by_change) == 1:  # we have read the file; the person saves before we rename ours over it
            save(path, saved)
        return add_srv(fmt, ENTRIES[client])(text)

    edited = ConfigService().edit(path, change_while_the_person_saves, fmt)
    assert isinstance(edited, Success)
    assert seen_by_change == [before, saved]  # read again, and our edit made again on the person's text
    assert path.read_text() == expected  # their save survived, our entry is on top of it


def test_a_file_that_keeps_changing_fails_clearly_and_keeps_the_last_save(tmp_path: Path) -> None:
    path = config_file(tmp_path, OPENCODE_BEFORE)
    saves: list[str] = []

    def change_while_a_script_saves_in_a_loop(text: str) -> str:
        saves.append(OPENCODE_BEFORE.replace("keep me", f"save {len(saves)}"))
        save_by_rename(path, saves[-1])
        return add_srv(OPENCODE, ENTRY)(text)

    edited = ConfigService().edit(path, change_while_a_script_saves_in_a_loop, OPENCODE)
    assert isinstance(edited, Failure) and edited.code is ErrorCode.CONFIG_INVALID
    assert "kept changing" in edited.error and edited.hint == "try again"
    assert len(saves) == MAX_EDIT_ATTEMPTS  # tried a bounded number of times, not forever
    assert path.read_text() == saves[-1]  # the last save is what the file holds: none was overwritten
