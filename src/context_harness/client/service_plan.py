"""The plans of `chctl service`: actions (write, make a directory, remove, run) built first, then either
described (`--dry-run`) or carried out in order, so a dry run shows exactly what a real run does.
Standard library only: chctl imports this for `chctl service`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from context_harness.primitives.result import ErrorCode, Failure
from context_harness.stores.atomic import atomic_write_bytes, ensure_private_dir

UNIT_FILE_MODE = 0o644  # unit files hold no secret; systemd and launchd expect them readable


@dataclass(frozen=True)
class Completed:
    """What a finished command left behind."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Completed]


@dataclass(frozen=True)
class Write:
    path: Path
    content: str
    mode: int = UNIT_FILE_MODE
    shown: str | None = None  # what a dry run prints instead of `content` (passwords masked)


@dataclass(frozen=True)
class MakeDir:
    path: Path
    private: bool = False  # created 0700 whatever the umask (CH_HOME); one that exists is left as it is


@dataclass(frozen=True)
class Remove:
    path: Path


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. stopping what is not running: worth a warning, not an abort


Action = Write | MakeDir | Remove | Run


class ServiceError(Exception):
    """An expected failure, carried to the CLI edge as `error[CODE]` plus a hint."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


def describe(actions: Sequence[Action]) -> str:
    """The dry-run text: each path with the full content to be written, each command as typed."""
    parts: list[str] = []
    for action in actions:
        match action:
            case Write(path, content, _, shown):
                parts.append(f"would write {path}:\n{content if shown is None else shown}")
            case MakeDir(path, _):
                parts.append(f"would create directory {path}\n")
            case Remove(path):
                parts.append(f"would remove {path}\n")
            case Run(argv, _):
                parts.append(f"would run: {shlex.join(argv)}\n")
    return "".join(parts)


def execute(actions: Sequence[Action], runner: Runner, *, out: TextIO, err: TextIO) -> None:
    for action in actions:
        match action:
            case Write(path, content, mode, _):
                try:
                    atomic_write_bytes(path, content.encode(), mode=mode)
                except OSError as exc:
                    raise _cannot_write(path, exc) from exc
                print(f"wrote {path}", file=out)
            case MakeDir(path, private):
                try:
                    if private:
                        ensure_private_dir(path)
                    else:
                        path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise _cannot_write(path, exc) from exc
            case Remove(path):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise _cannot_write(path, exc) from exc
                print(f"removed {path}", file=out)
            case Run(argv, may_fail):
                done = runner(argv)
                if done.returncode == 0:
                    print(f"ran: {shlex.join(argv)}", file=out)
                elif may_fail:
                    print(f"warning: {shlex.join(argv)} exited {done.returncode} (ignored)", file=err)
                else:
                    detail = _first_line(done.stderr) or _first_line(done.stdout)
                    raise ServiceError(
                        Failure(
                            f"{shlex.join(argv)} failed with exit {done.returncode}"
                            + (f": {detail}" if detail else ""),
                            ErrorCode.INTERNAL,
                            "fix the cause above and run `chctl service install` again",
                        )
                    )


def _cannot_write(path: Path, exc: OSError) -> ServiceError:
    return ServiceError(
        Failure(
            f"cannot change {path}: {exc.strerror or exc}",
            ErrorCode.PERMISSION_DENIED,
            "check the directory's owner and permissions",
        )
    )


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""
