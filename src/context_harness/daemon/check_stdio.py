"""`chctl check` for a local (stdio) entry: the server is started from the entry's own command and environment
in its config's directory, as an agent starts it, asked `initialize` and `tools/list` over stdin/stdout
(newline-delimited JSON-RPC), and stopped — all within the probe's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from context_harness.daemon.check import NEXT_ACTION, Answer, Probe, converse

# A server's stdout line (a tools/list with large schemas) may be long; beyond this it is not a sane answer.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Closing stdin is how MCP stdio servers are told to exit; a server still running this long after is killed.
STOP_GRACE_S = 2.0
START_HINT = "check the entry's command and environment (`chctl list`)"


class _Exited(Exception):
    """The server closed its stdout (exited) before answering."""


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
