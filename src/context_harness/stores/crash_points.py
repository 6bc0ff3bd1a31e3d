"""Named instants at which the crash test kills the daemon (SIGKILL, no cleanup), instead of hoping a
random sleep lands there: `CH_CRASH_AT=after_token_save` (or another name below) in the daemon's
environment. A point passed on behalf of one keychain item also takes `NAME:KEY`, the first time that item
gets there (`after_secret_copy:linear/client`: the client secret's copy, not the credential's). Unset, as
always outside that test, a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

# The instants between two writes where a crash used to leave files disagreeing with each other.
AFTER_TOKEN_SAVE = "after_token_save"  # the new token is stored; no config has it yet
# One config written; with several bound to a server, the next ones not yet (between two config writes).
AFTER_CONFIG_WRITE = "after_config_write"
AFTER_BINDING_WRITE = "after_binding_write"  # `chctl add` bound the config; the entry is not written yet
# The keychain holds the new values (a rotated refresh token); the token file still names the previous stamp.
AFTER_SECRET_WRITE = "after_secret_write"
# `chctl secrets migrate`: the new copy is written (not read back yet); read back (the token file still names
# the old copy); the token file names the new copy (the old one is not removed yet).
AFTER_SECRET_COPY = "after_secret_copy"
AFTER_SECRET_READBACK = "after_secret_readback"
AFTER_SECRET_SWITCH = "after_secret_switch"

ENV = "CH_CRASH_AT"


def crash_point(name: str, key: str | None = None) -> None:
    wanted = os.environ.get(ENV)
    if wanted is not None and (wanted == name or (key is not None and wanted == f"{name}:{key}")):
        os.kill(os.getpid(), signal.SIGKILL)
