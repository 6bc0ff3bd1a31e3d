"""A hostile far end of an SSH forward: many connections to a socket, each asking for something and held open;
one the daemon closes (or refuses) is opened again at once, as an attacker would. Used by the attack tests
(tests/test_remote_limits.py) and bench/remote_flood.py."""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPLY_TIMEOUT_S = 10.0
RETRY_S = 0.01  # between a refused attempt and the next one on the same connection slot


def request_line(method: str, params: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}).encode() + b"\n"


@dataclass
class Flood:
    """What the flood saw: connections holding what they asked for, and attempts refused or unanswered."""

    held: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    first_round: threading.Event = field(default_factory=threading.Event)  # every slot made one attempt
    replies: list[dict[str, Any]] = field(default_factory=list)  # one sample of each kind of refusal


async def _attempt(path: Path, line: bytes) -> tuple[str, asyncio.StreamWriter | None, Any]:
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:  # a full backlog (EAGAIN) or no socket at all
        return "not connected", None, None
    try:
        writer.write(line)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT_S)
    except (OSError, TimeoutError):
        await _close(writer)
        return "no answer", None, None
    if not reply:
        await _close(writer)
        return "closed", None, None
    message = json.loads(reply)
    if "result" in message:
        return "held", writer, message
    await _close(writer)
    return "refused", None, message


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # reset by the daemon: what we wanted to know is known


async def _slot(path: Path, line: bytes, flood: Flood, stop: asyncio.Event, started: list[int], count: int) -> None:
    first = True
    while not stop.is_set():
        kind, writer, message = await _attempt(path, line)
        flood.outcomes[kind] += 1
        if message is not None and kind == "refused" and len(flood.replies) < 4:
            if all(r.get("error", {}).get("message") != message["error"].get("message") for r in flood.replies):
                flood.replies.append(message)
        if first:
            first = False
            started[0] += 1
            if started[0] == count:
                flood.first_round.set()
        if writer is not None:
            flood.held += 1
            await stop.wait()
            await _close(writer)
            return
        await asyncio.sleep(RETRY_S)


@contextmanager
def flooding(path: Path, count: int, line: bytes) -> Iterator[Flood]:
    """`count` connections to `path`, each sending `line`, kept up in a thread of their own until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 256:  # this process holds them all: room for them
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 256, hard), hard))
    flood = Flood()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        started = [0]
        await asyncio.gather(*(_slot(path, line, flood, stop, started, count) for _ in range(count)))

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        yield flood
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
