"""Run a blocking file operation off the event loop, with a deadline.

A config on a hung mount (NFS gone away, a FIFO someone put in its place) blocks the thread that reads
it, possibly forever. On the event loop that would freeze the daemon: no RPC answers, no refreshes, no
clean stop. In a thread of its own it costs that thread only: the caller gets a timeout after `timeout_s`
and retries later. The thread is a daemon thread, so a thread stuck for good never keeps the process from
exiting (a ThreadPoolExecutor's workers would: they are joined at exit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from context_harness.primitives.result import ErrorCode, Failure, Result

T = TypeVar("T")


class StillRunning(Exception):
    """The operation did not finish within its deadline; its thread may still be blocked."""


async def run_blocking(fn: Callable[[], T], timeout_s: float, name: str = "blocking-io") -> T:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)  # type: ignore[arg-type]

    def work() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the awaiting task, not lost in the thread
            _call_soon(loop, settle, None, exc)
        else:
            _call_soon(loop, settle, value, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        raise StillRunning(f"not done after {timeout_s:g} s") from None


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed while the thread was blocked: nobody is waiting any more
        pass


async def run_config_io(work: Callable[[], Result[T]], timeout_s: float, what: str) -> Result[T]:
    """A service call that reads or writes config files, in a thread with a deadline: a config on a hung
    mount fails this one call with TIMEOUT, and the event loop goes on serving everyone else."""
    try:
        return await run_blocking(work, timeout_s, name=what)
    except StillRunning:
        return Failure(
            f"{what} did not finish within {timeout_s:g} s: a config it reads may be on a hung mount",
            ErrorCode.TIMEOUT,
            "check the file (e.g. `ls -l` it); `chctl doctor` lists every config in use",
        )
