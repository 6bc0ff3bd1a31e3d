"""ConfigService: find, create, read and surgically edit opencode config files. Returns `Result`."""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from context_harness.config import opencode
from context_harness.config.jsonc import JsoncEditError, JsoncError, parse_jsonc, remove_member, set_member
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.stores.atomic import ChangedBeforeRename, atomic_write_bytes
from context_harness.stores.crash_points import AFTER_CONFIG_WRITE, crash_point

log = structlog.get_logger(__name__)

# A file that keeps changing under us (an editor saving in a loop) is not worth more tries than this.
MAX_EDIT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class ConfigTarget:
    """Which config a command means: `--project DIR`, `--global`, or the nearest one to `cwd`."""

    cwd: Path
    project: Path | None = None
    global_: bool = False


def _missing(path: Path, init_command: str = "chctl init") -> Failure:
    return Failure(f"no opencode config at {path}", ErrorCode.CONFIG_MISSING, f"run `{init_command}` to create one")


def _init_command(target: ConfigTarget) -> str:
    """The `chctl init` that creates the config `target` names (the hint after `list --global` and the like)."""
    if target.project is not None:
        return f"chctl init --project {shlex.quote(str(target.project))}"
    return "chctl init --global" if target.global_ else "chctl init"


def _os_failure(path: Path, exc: OSError) -> Failure:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Failure(
            f"cannot write {path}: {exc.strerror}",
            ErrorCode.PERMISSION_DENIED,
            "check the file's and its directory's permissions; nothing was changed",
        )
    return Failure(f"cannot access {path}: {exc.strerror}", ErrorCode.INTERNAL)


def _invalid(path: Path, exc: JsoncError | UnicodeDecodeError) -> Failure:
    return Failure(
        f"{path} does not parse: {exc}",
        ErrorCode.CONFIG_INVALID,
        "fix the file by hand (nothing was written), then run the command again",
    )


def _misshapen(path: Path, problem: str) -> Failure:
    return Failure(
        f"{path}: {problem}",
        ErrorCode.CONFIG_INVALID,
        'opencode expects {"mcp": {...}}: fix the file by hand (nothing was written), then run the command again',
    )


# What reading (and parsing) a config can raise; `_read_failure` names each for the user.
READ_ERRORS = (OSError, JsoncError, UnicodeDecodeError)


def _read_failure(path: Path, exc: OSError | JsoncError | UnicodeDecodeError) -> Failure:
    if isinstance(exc, FileNotFoundError):
        return _missing(path)
    if isinstance(exc, JsoncError | UnicodeDecodeError):
        return _invalid(path, exc)
    return _os_failure(path, exc)


class ConfigService:
    def resolve(self, target: ConfigTarget, *, for_create: bool = False) -> Result[Path]:
        if target.project is not None:
            directory = (target.cwd / target.project).resolve()
            if not directory.is_dir():
                return Failure(f"{directory} is not a directory", ErrorCode.INVALID_PARAMS)
            path = opencode.project_config_path(directory)
        elif target.global_:
            path = opencode.global_config_path()
        else:
            found = opencode.find_nearest_config(target.cwd)
            if found is None:
                if for_create:
                    return Success(opencode.project_config_path(target.cwd.resolve()))
                return Failure(
                    f"no opencode.json or opencode.jsonc in {target.cwd} or its parents up to the git root",
                    ErrorCode.CONFIG_MISSING,
                    "run `chctl init` here (or pass --project DIR / --global)",
                )
            path = found
        if not for_create and not path.exists():
            return _missing(path, _init_command(target))
        return Success(path)

    def init(self, target: ConfigTarget) -> Result[tuple[Path, bool]]:
        """Create the config with `$schema` and an empty `mcp`, or leave an existing one alone."""
        resolved = self.resolve(target, for_create=True)
        if isinstance(resolved, Failure):
            return resolved
        path = resolved.value
        if path.exists():
            return Success((path, False))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, opencode.NEW_CONFIG_TEXT.encode(), mode=opencode.NEW_CONFIG_MODE)
        except OSError as exc:
            return _os_failure(path, exc)
        log.info("config_created", path=str(path))
        return Success((path, True))

    def read(self, path: Path) -> Result[Any]:
        try:
            return Success(parse_jsonc(path.read_bytes().decode("utf-8")))
        except READ_ERRORS as exc:
            return _read_failure(path, exc)

    def entries(self, path: Path) -> Result[dict[str, Any]]:
        document = self.read(path)
        if isinstance(document, Failure):
            return document
        problem = opencode.shape_problem(document.value)
        if problem is not None:
            return _misshapen(path, problem)
        return Success(opencode.mcp_entries(document.value))

    def edit(self, path: Path, change: Callable[[str], str], *, private: bool = False) -> Result[None]:
        """Apply `change` to the file's text and replace it atomically, keeping its mode.

        If the file changed between our read and our rename, read it again and re-apply, so an edit made by a
        person (or another writer) in between is not lost. The check (inode, size, mtime and content) runs
        after the temp file is written and fsynced, right before the rename: what remains is the instant
        between that check and the rename itself — microseconds, where it used to be the whole fsync. A
        file that does not parse is never written.
        `private`: the new text holds a secret, so group and others lose their access (0644 → 0600) in the
        same atomic replacement.
        """
        real = path.resolve()  # write through symlinks (dotfile managers) instead of replacing them
        for _ in range(MAX_EDIT_ATTEMPTS):
            try:
                seen = real.stat()
                before = real.read_bytes()
                text = before.decode("utf-8")
                new_text = change(text)
                parse_jsonc(new_text)  # never write what we could not read back
            except READ_ERRORS as exc:
                return _read_failure(path, exc)
            except JsoncEditError as exc:  # valid JSON, but no object where the member goes
                return _misshapen(path, str(exc))
            if new_text == text:
                return Success(None)

            def unchanged(seen: os.stat_result = seen, before: bytes = before) -> bool:
                now = real.stat()
                same = (now.st_ino, now.st_size, now.st_mtime_ns) == (seen.st_ino, seen.st_size, seen.st_mtime_ns)
                return same and real.read_bytes() == before

            try:
                mode = _private_mode(real) if private else None
                atomic_write_bytes(real, new_text.encode(), mode=mode, unchanged=unchanged)
            except ChangedBeforeRename:
                log.info("config_changed_during_edit", path=str(path))
                continue
            except OSError as exc:
                return _os_failure(path, exc)
            crash_point(AFTER_CONFIG_WRITE)
            return Success(None)
        return Failure(f"{path} kept changing while we edited it", ErrorCode.CONFIG_INVALID, "try again")

    def put_entry(self, path: Path, name: str, entry: dict[str, Any], *, private: bool = False) -> Result[None]:
        return self.edit(path, lambda text: set_member(text, opencode.entry_path(name), entry), private=private)

    def remove_entry(self, path: Path, name: str) -> Result[bool]:
        entries = self.entries(path)
        if isinstance(entries, Failure):
            return entries
        if name not in entries.value:
            return Success(False)
        edited = self.edit(path, lambda text: remove_member(text, opencode.entry_path(name)))
        return edited if isinstance(edited, Failure) else Success(True)

    def set_header(self, path: Path, name: str, header: str, value: str, *, private: bool = False) -> Result[None]:
        """Write one header of an existing entry, plus `"oauth": false` so opencode does not start its own flow."""

        def change(text: str) -> str:
            document = parse_jsonc(text)
            problem = opencode.shape_problem(document)
            if problem is not None:  # not "the entry is gone": that would drop the binding
                raise JsoncEditError(problem)
            entry = opencode.mcp_entries(document).get(name)
            if not isinstance(entry, dict):
                raise _EntryGone(name)
            text = set_member(text, opencode.header_path(name, header), value)
            if entry.get("oauth") is not False:
                text = set_member(text, opencode.oauth_path(name), False)
            return text

        try:
            return self.edit(path, change, private=private)
        except _EntryGone:
            return Failure(
                f"{path} no longer has an mcp.{name} entry",
                ErrorCode.NOT_FOUND,
                f"run `chctl add {name}` again to restore it",
            )


def _private_mode(path: Path) -> int:
    current = path.stat().st_mode & 0o7777
    private = current & ~0o077
    if private != current:
        log.info("config_made_private", path=str(path), mode=f"{private:o}")
    return private


class _EntryGone(Exception):
    pass
