"""`chctl check` for a local (stdio) entry: only a command the user added with chctl is started
(`services.local_commands`), from the config it was bound in and in that config's directory, as an agent
starts it, asked `initialize` and `tools/list` over stdin/stdout (newline-delimited JSON-RPC), and stopped —
all within the probe's deadline. The nearest config's own local entries are reported, never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from context_harness.config.format import DEFAULT_CLIENT, get_format
from context_harness.primitives.result import Failure, Result, Success
from context_harness.services.blocking_io import run_config_io
from context_harness.services.config_service import ConfigService, ConfigTarget
from context_harness.services.local_commands import registered_command, unregistered
from context_harness.services.mcp_service import MCPService
from context_harness.stores.bindings import Binding
from context_harness.workers.probe import NEXT_ACTION, Answer, Probe, converse

# A server's stdout line (a tools/list with large schemas) may be long; beyond this it is not a sane answer.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Closing stdin is how MCP stdio servers are told to exit; a server still running this long after is killed.
STOP_GRACE_S = 2.0
START_HINT = "check the entry's command and environment (`chctl list`)"


class _Exited(Exception):
    """The server closed its stdout (exited) before answering."""


async def probe_local(
    config: ConfigService,
    name: str,
    bindings: list[Binding],
    nearby: Nearby | None,
    timeout_s: float,
    io_timeout_s: float,
) -> Probe | None:
    """Start the command chctl recorded when the user added `name` (`local_commands`), never one a config
    merely holds: the nearest config's own entry (a cloned repository's) is reported, not run. None: `name`
    is not local at all."""
    registered = await run_config_io(
        lambda: registered_command(name, config, bindings), io_timeout_s, "reading the config"
    )
    if isinstance(registered, Failure):
        return Probe(name, "config", "attention", registered.error, registered.hint)
    command = registered.value
    if command is None:
        if nearby is None:
            return None
        refused = unregistered(name, nearby.path, get_format(DEFAULT_CLIENT))
        return Probe(name, "config", "attention", refused.error, refused.hint)
    probe = await probe_stdio(name, command.argv, command.environment, command.directory, timeout_s)
    if nearby is not None and (nearby.argv, nearby.environment) != (command.argv, command.environment):
        note = f"{nearby.path} has its own {name} entry, with a command chctl did not record: it was not run"
        probe = replace(probe, note=note)
    return probe


@dataclass(frozen=True, slots=True)
class Nearby:
    """A local entry of the config nearest the current directory: input, never run by itself."""

    path: Path
    argv: list[str]
    environment: dict[str, str]


async def nearby_local_entries(mcp: MCPService, cwd: Path, io_timeout_s: float) -> dict[str, Nearby]:
    """The local (stdio) entries of the config nearest `cwd`."""
    fmt = get_format(DEFAULT_CLIENT)

    def read() -> Result[dict[str, Nearby]]:
        found = mcp.list_configured(ConfigTarget(cwd=cwd))
        if isinstance(found, Failure):
            return found
        path, entries = found.value
        return Success(
            {
                name: Nearby(path.resolve(), fmt.entry_command(entry), fmt.entry_environment(entry))
                for name, entry in entries.items()
                if isinstance(entry, dict) and fmt.entry_url(entry) is None and fmt.entry_command(entry)
            }
        )

    found = await run_config_io(read, io_timeout_s, "reading the config")
    return found.value if isinstance(found, Success) else {}


async def probe_stdio(name: str, argv: list[str], environment: dict[str, str], cwd: Path, timeout_s: float) -> Probe:
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **environment},
            cwd=cwd,
            start_new_session=True,  # its own process group: stopping it stops what it started
            limit=MAX_LINE_BYTES,
        )
    except OSError as exc:
        return Probe(name, "config", "failed", f"cannot start {argv[0]!r}: {exc.strerror or exc}", START_HINT)
    try:
        async with asyncio.timeout(timeout_s):
            probe = await _talk(name, process)
    except TimeoutError:
        said = f"{name} (started as {argv[0]!r}) did not answer within {timeout_s:g} s"
        probe = Probe(name, "timeout", "failed", said, START_HINT)
    except (_Exited, ConnectionError, ValueError):
        said = f"{name} (started as {argv[0]!r}) exited or closed its output before answering"
        probe = Probe(name, "protocol", "failed", said, START_HINT)
    finally:
        await _stop(process)
    return replace(probe, elapsed_ms=round((time.monotonic() - started) * 1000))


async def _talk(name: str, process: asyncio.subprocess.Process) -> Probe:
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    ids = itertools.count(1)

    async def send(message: dict[str, Any]) -> None:
        stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await stdin.drain()

    async def ask(method: str, params: dict[str, Any]) -> Answer:
        request_id = f"chctl-check-{next(ids)}"
        await send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while line := await stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not JSON-RPC (a stray print): an agent's SDK skips it too
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return Answer.of(message)
        raise _Exited

    async def notify(method: str) -> None:
        await send({"jsonrpc": "2.0", "method": method})

    def failed(error: Any) -> Probe:
        said = error.get("message") if isinstance(error, dict) else None
        return Probe(name, "protocol", "failed", f"{name} answered with an error: {said}", NEXT_ACTION["protocol"])

    return await converse(name, ask, notify, failed)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
