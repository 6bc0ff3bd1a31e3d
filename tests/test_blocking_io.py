"""Config I/O threads: a bounded number at once, each holding its place until it returns, stuck or not."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from context_harness.services import blocking_io
from context_harness.services.blocking_io import CONFIG_IO_THREADS, StillRunning, run_blocking

CALLS = CONFIG_IO_THREADS + 12


async def eventually(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


class Gate:
    """A blocking operation that waits for `release`, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def work(self) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(30)
            return "done"
        finally:
            with self.lock:
                self.running -= 1


async def test_no_more_than_the_limit_of_operations_run_at_once_and_the_rest_wait_their_turn() -> None:
    gate = Gate()
    limiter = blocking_io._limiter(asyncio.get_running_loop())
    calls = [asyncio.create_task(run_blocking(gate.work, 30.0)) for _ in range(CALLS)]
    try:
        # Either too many threads run (the bug), or the limit runs and every other call waits for a place.
        await eventually(
            lambda: gate.running > CONFIG_IO_THREADS or limiter.statistics().tasks_waiting == CALLS - CONFIG_IO_THREADS,
            what="the calls to start or queue",
        )
        assert gate.running == CONFIG_IO_THREADS
    finally:
        gate.release.set()
    assert await asyncio.gather(*calls) == ["done"] * CALLS
    assert gate.peak == CONFIG_IO_THREADS
    assert limiter.borrowed_tokens == 0


async def test_a_stuck_operation_keeps_its_place_and_its_key_until_its_thread_returns() -> None:
    gate = Gate()
    limiter = blocking_io._limiter(asyncio.get_running_loop())
    try:
        with pytest.raises(StillRunning):
            await run_blocking(gate.work, 0.3, key="/hung/opencode.json")
        assert limiter.borrowed_tokens == 1  # the thread is still blocked: it still counts
        with pytest.raises(StillRunning, match="still blocked"):  # a retry starts no second thread
            await run_blocking(gate.work, 30.0, key="/hung/opencode.json")
        assert gate.peak == 1
    finally:
        gate.release.set()
    await eventually(lambda: limiter.borrowed_tokens == 0, what="the place given back")
    assert await run_blocking(lambda: "again", 30.0, key="/hung/opencode.json") == "again"


async def test_an_error_in_the_operation_reaches_the_caller_and_frees_the_place() -> None:
    def fail() -> None:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        await run_blocking(fail, 30.0)
    assert blocking_io._limiter(asyncio.get_running_loop()).borrowed_tokens == 0
