"""`CH_CA_BUNDLE`: certificates the daemon trusts in addition to the system's, read from a file only the user
(or root) can change.

Whoever can write the bundle can make the daemon trust a CA of their own, and then any server they stand up
with its certificate gets the user's keys and tokens. So the file is refused, naming it and the fix, when
another user owns it, when group or others can write it, or when it sits in a directory another user owns or
group or others can write — the directories up to `/` and those of any symbolic link on the way, as the
kernel walks them. A sticky directory (mode 1777: `/tmp`) is accepted when what is in it is the user's or
root's: the sticky bit lets nobody else rename or remove it.

The bundle is read once, into a `CaBundle` that carries its certificates: the trust store is built from
what was checked (not from a path read again later), and a reload compares the content, so a changed file
is picked up even when its path is the same.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from context_harness.primitives.path_trust import entry_problem, first_problem

# The full Mozilla bundle is about 220 KB; a file far larger is not a CA bundle.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


class UntrustedBundle(ValueError):
    """The bundle, or a directory or link on its path, can be changed by someone other than the user or root."""


@dataclass(frozen=True, slots=True)
class CaBundle:
    """The bundle as it was read: its path (for messages) and its PEM certificates (what is trusted)."""

    path: Path
    certificates: str = field(repr=False)


def read_ca_bundle(path: Path, uid: int | None = None) -> CaBundle:
    """The certificates of `path`: UntrustedBundle when others can change it, ValueError (naming the file) when
    it cannot be read or holds no PEM certificate."""
    uid = os.getuid() if uid is None else uid
    found = first_problem(path, uid)
    if found is not None:
        entry, problem = found
        raise UntrustedBundle(f"refusing CH_CA_BUNDLE {path}: {problem}; {_fix(path, entry, problem)}")
    real = os.path.realpath(path)
    try:  # O_NONBLOCK: a FIFO put there would otherwise hang the daemon's start until someone writes to it
        with os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as bundle:
            opened = os.fstat(bundle.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise ValueError(f"CH_CA_BUNDLE {path}: not a regular file")
            if entry_problem(Path(real), opened, uid, leaf=True) is not None:
                raise UntrustedBundle(f"refusing CH_CA_BUNDLE {path}: it changed while it was checked")
            data = bundle.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"CH_CA_BUNDLE {path}: cannot be read ({exc.strerror})") from None
    certificates = PEM_CERTIFICATE.findall(data)
    if len(data) > MAX_BUNDLE_BYTES or not certificates:
        raise ValueError(f"CH_CA_BUNDLE {path}: no PEM certificates could be read")
    return CaBundle(path, b"\n".join(certificates).decode("ascii") + "\n")


def _fix(path: Path, entry: Path, problem: str) -> str:
    check = "check that it holds only the CAs you mean to trust, then "
    if entry == Path(os.path.realpath(path)) and "can be written by others" in problem:
        return check + f"`chmod go-w {entry}`"
    return (
        check + f"copy it where only you can write (`install -m 600 {path} ~/.context-harness/ca-bundle.pem`) "
        "and set CH_CA_BUNDLE to the copy"
    )
