"""ConfigService: find, create, read and surgically edit agent config files. Returns `Result`.

Client-neutral: what differs between clients (paths, syntax, entry shapes) comes from the `ConfigFormat`
every method is given; nothing here knows a client.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from context_harness.config.format import DEFAULT_CLIENT, ConfigFormat
from context_harness.config.jsonc import JsoncEditError, JsoncError
from context_harness.config.toml_edit import TomlEditError, TomlError
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.stores.atomic import ChangedBeforeRename, atomic_write_bytes
from context_harness.stores.crash_points import AFTER_CONFIG_WRITE, crash_point

log = structlog.get_logger(__name__)

# A file that keeps changing under us (an editor saving in a loop) is not worth more tries than this.
MAX_EDIT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class UrlChanged:
    """An entry whose URL is not the one its credential belongs to (changed by hand or by a pull)."""

    found: str | None  # the URL the entry holds now; None: it holds none


@dataclass(frozen=True, slots=True)
class ConfigTarget:
    """Which config a command means: `--project DIR`, `--global`, or the nearest one to `cwd`."""

    cwd: Path
    project: Path | None = None
    global_: bool = False


def target_flags(path: Path, fmt: ConfigFormat) -> str:
    """` --project DIR --client C` (or ` --global`) naming the config at `path` for `chctl add`/`remove`."""
    client = "" if fmt.name == "opencode" else f" --client {fmt.name}"
    try:
        if fmt.global_path().resolve() == path:
            return " --global" + client
    except OSError:
        pass
    for directory in (path.parent, path.parent.parent):
        if fmt.project_path(directory).resolve() == path:
            return f" --project {shlex.quote(str(directory))}" + client
    return client


def _missing(path: Path, fmt: ConfigFormat, init_command: str = "chctl init") -> Failure:
    return Failure(f"no {fmt.label} config at {path}", ErrorCode.CONFIG_MISSING, f"run `{init_command}` to create one")


def init_command(target: ConfigTarget, fmt: ConfigFormat) -> str:
    """The `chctl init` that creates the config `target` names (the hint after `list --global` and the like)."""
    client = "" if fmt.name == DEFAULT_CLIENT else f" --client {fmt.name}"
    if target.project is not None:
        return f"chctl init --project {shlex.quote(str(target.project))}{client}"
    return ("chctl init --global" if target.global_ else "chctl init") + client


def _os_failure(path: Path, exc: OSError) -> Failure:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Failure(
            f"cannot write {path}: {exc.strerror}",
            ErrorCode.PERMISSION_DENIED,
            "check the file's and its directory's permissions; nothing was changed",
        )
    return Failure(f"cannot access {path}: {exc.strerror}", ErrorCode.INTERNAL)


def _invalid(path: Path, exc: JsoncError | TomlError | UnicodeDecodeError) -> Failure:
    return Failure(
        f"{path} does not parse: {exc}",
        ErrorCode.CONFIG_INVALID,
        "fix the file by hand (nothing was written), then run the command again",
    )


def _misshapen(path: Path, problem: str, fmt: ConfigFormat) -> Failure:
    return Failure(
        f"{path}: {problem}",
        ErrorCode.CONFIG_INVALID,
        f"{fmt.label} expects {fmt.shape_example()}: fix the file by hand (nothing was written), "
        "then run the command again",
    )


# What reading (and parsing) a config can raise; `_read_failure` names each for the user.
READ_ERRORS = (OSError, JsoncError, TomlError, UnicodeDecodeError)


def _read_failure(path: Path, exc: OSError | JsoncError | TomlError | UnicodeDecodeError, fmt: ConfigFormat) -> Failure:
    if isinstance(exc, FileNotFoundError):
        return _missing(path, fmt)
    if isinstance(exc, JsoncError | TomlError | UnicodeDecodeError):
        return _invalid(path, exc)
    return _os_failure(path, exc)


class ConfigService:
    def __init__(self) -> None:
        # Configs whose mode a write narrowed (0644 → 0600: they now hold a secret), by path, until a command
        # that wrote them says so (`take_narrowed`); the log has each one at once.
        self.narrowed: dict[str, tuple[int, int]] = {}

    def take_narrowed(self, paths: list[str]) -> dict[str, tuple[int, int]]:
        """The mode changes (before, after) made to these configs since they were last told, forgotten now."""
        return {path: self.narrowed.pop(path) for path in paths if path in self.narrowed}

    def resolve(self, target: ConfigTarget, *, fmt: ConfigFormat, for_create: bool = False) -> Result[Path]:
        if target.project is not None:
            directory = (target.cwd / target.project).resolve()
            if not directory.is_dir():
                return Failure(f"{directory} is not a directory", ErrorCode.INVALID_PARAMS)
            path = fmt.project_path(directory)
        elif target.global_:
            path = fmt.global_path()
        else:
            found = fmt.default_path(target.cwd)
            if found is None and for_create:
                return Success(fmt.project_path(target.cwd.resolve()))
            if found is None:  # outside a project, reading: the user-level config, as the agent reads it too
                found = fmt.global_path()
                if not found.exists():
                    return Failure(
                        fmt.no_default_path(target.cwd) + f", and no {found}",
                        ErrorCode.CONFIG_MISSING,
                        "`chctl init` creates one here, `chctl init --global` your user-level one",
                    )
            path = found
        if not for_create and not path.exists():
            return _missing(path, fmt, init_command(target, fmt))
        return Success(path)

    def init(self, target: ConfigTarget, fmt: ConfigFormat) -> Result[tuple[Path, bool]]:
        """Create the config (opencode's with `$schema` and an empty `mcp`), or leave an existing one alone."""
        resolved = self.resolve(target, for_create=True, fmt=fmt)
        if isinstance(resolved, Failure):
            return resolved
        return self.create(resolved.value, fmt)

    def create(self, path: Path, fmt: ConfigFormat) -> Result[tuple[Path, bool]]:
        if path.exists():
            return Success((path, False))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, fmt.new_file_text.encode(), mode=fmt.new_file_mode)
        except OSError as exc:
            return _os_failure(path, exc)
        log.info("config_created", path=str(path), client=fmt.name)
        return Success((path, True))

    def read(self, path: Path, fmt: ConfigFormat) -> Result[Any]:
        try:
            return Success(fmt.syntax.parse(path.read_bytes().decode("utf-8")))
        except READ_ERRORS as exc:
            return _read_failure(path, exc, fmt)

    def entries(self, path: Path, fmt: ConfigFormat) -> Result[dict[str, Any]]:
        document = self.read(path, fmt)
        if isinstance(document, Failure):
            return document
        problem = fmt.shape_problem(document.value)
        if problem is not None:
            return _misshapen(path, problem, fmt)
        return Success(fmt.entries(document.value))

    def edit(
        self, path: Path, change: Callable[[str], str], fmt: ConfigFormat, *, private: bool = False
    ) -> Result[None]:
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
                fmt.syntax.parse(new_text)  # never write what we could not read back
            except READ_ERRORS as exc:
                return _read_failure(path, exc, fmt)
            except (JsoncEditError, TomlEditError) as exc:  # valid syntax, but no object where the member goes
                return _misshapen(path, str(exc), fmt)
            if new_text == text:
                return Success(None)

            def unchanged(seen: os.stat_result = seen, before: bytes = before) -> bool:
                now = real.stat()
                same = (now.st_ino, now.st_size, now.st_mtime_ns) == (seen.st_ino, seen.st_size, seen.st_mtime_ns)
                return same and real.read_bytes() == before

            try:
                mode = _private_mode(real) if private else None
                atomic_write_bytes(real, new_text.encode(), mode=mode, unchanged=unchanged)
                if mode is not None and mode != stat.S_IMODE(seen.st_mode):
                    self.narrowed[str(real)] = (stat.S_IMODE(seen.st_mode), mode)
            except ChangedBeforeRename:
                log.info("config_changed_during_edit", path=str(path))
                continue
            except OSError as exc:
                return _os_failure(path, exc)
            crash_point(AFTER_CONFIG_WRITE)
            return Success(None)
        return Failure(f"{path} kept changing while we edited it", ErrorCode.CONFIG_INVALID, "try again")

    def put_entry(
        self, path: Path, name: str, entry: dict[str, Any], fmt: ConfigFormat, *, private: bool = False
    ) -> Result[None]:
        return self.edit(path, lambda text: fmt.syntax.set(text, fmt.entry_path(name), entry), fmt, private=private)

    def remove_entry(self, path: Path, name: str, fmt: ConfigFormat) -> Result[bool]:
        entries = self.entries(path, fmt)
        if isinstance(entries, Failure):
            return entries
        if name not in entries.value:
            return Success(False)
        edited = self.edit(path, lambda text: fmt.syntax.remove(text, fmt.entry_path(name)), fmt)
        return edited if isinstance(edited, Failure) else Success(True)

    def set_header(
        self,
        path: Path,
        name: str,
        header: str,
        value: str,
        fmt: ConfigFormat,
        *,
        url: str | None,
        private: bool = False,
    ) -> Result[UrlChanged | None]:
        """Write one header of an existing entry (and whatever else the format needs beside it), if the entry
        points at `url`, the server the credential belongs to. An entry that points elsewhere (or any entry,
        when no URL is recorded) loses the header instead, in the same read-modify-write (a check before the
        edit could be raced by a `git pull`), and the answer says where it points."""
        url_changed: list[UrlChanged] = []

        def change(text: str) -> str:
            url_changed.clear()  # `edit` may run this again on a file that changed under it
            document = fmt.syntax.parse(text)
            problem = fmt.shape_problem(document)
            if problem is not None:  # not "the entry is gone": that would drop the binding
                raise JsoncEditError(problem)
            entry = fmt.entries(document).get(name)
            if not isinstance(entry, dict):
                raise _EntryGone(name)
            if url is None or fmt.entry_url(entry) != url:
                url_changed.append(UrlChanged(fmt.entry_url(entry)))
                return fmt.remove_header(text, name, header)
            return fmt.set_header(text, name, header, value)

        try:
            edited = self.edit(path, change, fmt, private=private)
        except _EntryGone:
            return Failure(
                f"{path} no longer has an {fmt.where(name)} entry",
                ErrorCode.NOT_FOUND,
                f"run `chctl add {name}` again to restore it",
            )
        if isinstance(edited, Failure):
            return edited
        return Success(url_changed[0] if url_changed else None)

    def remove_header(self, path: Path, name: str, header: str, fmt: ConfigFormat) -> Result[None]:
        return self.edit(path, lambda text: fmt.remove_header(text, name, header), fmt)


def _private_mode(path: Path) -> int:
    current = path.stat().st_mode & 0o7777
    private = current & ~0o077
    if private != current:
        log.info("config_made_private", path=str(path), mode=f"{private:o}")
    return private


class _EntryGone(Exception):
    pass
