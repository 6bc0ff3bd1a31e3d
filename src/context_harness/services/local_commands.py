"""Which local (stdio) server `chctl check` may start: only a command chctl recorded when the user added it
(`chctl add NAME --command ...`), read from the config it was bound in, and only while that entry still holds
exactly that command and environment. A config found from the current directory (a cloned repository's) is
input: a local entry only it has is reported, never run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from context_harness.config.format import ConfigFormat, get_format
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.config_service import ConfigService, target_flags
from context_harness.stores.bindings import Binding


@dataclass(frozen=True, slots=True)
class LocalCommand:
    """A local server as an agent starts it: its command and environment, in its config's directory."""

    argv: list[str]
    environment: dict[str, str]
    directory: Path


def environment_sha256(environment: dict[str, str]) -> str:
    """What a binding keeps of a local entry's environment: its values may be secrets, and the config has them."""
    return hashlib.sha256(json.dumps(environment, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def registered_command(name: str, config: ConfigService, bindings: list[Binding]) -> Result[LocalCommand | None]:
    """The command chctl recorded for `name`, from the latest bound config that has a local entry for it; a
    Failure when that entry no longer holds what was recorded, or was bound before commands were recorded
    (then: add it again); None when no bound config has a local entry for `name`. Reads configs: call it in a
    thread."""
    for binding in reversed(bindings):
        fmt = get_format(binding.client)
        entries = config.entries(Path(binding.path), fmt)
        entry = entries.value.get(name) if isinstance(entries, Success) else None
        if not isinstance(entry, dict) or fmt.entry_url(entry) is not None or not fmt.entry_command(entry):
            continue
        argv, environment = fmt.entry_command(entry), fmt.entry_environment(entry)
        add_again = _add_command(name, Path(binding.path), fmt)
        if binding.command is None:
            return Failure(
                f"{name} was added by an older chctl, which recorded no command for it: not run",
                ErrorCode.CONFIG_INVALID,
                f"add it again, so chctl records what it may start: {add_again}",
            )
        if argv != binding.command or environment_sha256(environment) != binding.environment_sha256:
            return Failure(
                f"{name}'s entry in {binding.path} no longer holds the command and environment `chctl add` "
                "recorded: not run",
                ErrorCode.CONFIG_INVALID,
                f"if you changed it, record it: {add_again}",
            )
        return Success(LocalCommand(argv, environment, Path(binding.path).parent))
    return Success(None)


def unregistered(name: str, path: Path, fmt: ConfigFormat) -> Failure:
    """A local entry that only a config the user never bound holds (a cloned repository's)."""
    return Failure(
        f"{name}'s local entry in {path} was not added with chctl: its command was not run",
        ErrorCode.CONFIG_INVALID,
        f"if you trust it, add it: {_add_command(name, path, fmt)}",
    )


def _add_command(name: str, path: Path, fmt: ConfigFormat) -> str:
    return f'`chctl add {name} --command "CMD ARGS"{target_flags(path, fmt)}`'
