"""Named instants at which the crash test kills the daemon (SIGKILL, no cleanup), instead of hoping a
random sleep lands there: `CH_CRASH_AT=after_token_save` (or another name below) in the daemon's
environment. Unset, as always outside that test, a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

# The instants between two writes where a crash used to leave files disagreeing with each other.
AFTER_TOKEN_SAVE = "after_token_save"  # the new token is stored; no config has it yet
# One config written; with several bound to a server, the next ones not yet (between two config writes).
AFTER_CONFIG_WRITE = "after_config_write"
AFTER_BINDING_WRITE = "after_binding_write"  # `chctl add` bound the config; the entry is not written yet

ENV = "CH_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
