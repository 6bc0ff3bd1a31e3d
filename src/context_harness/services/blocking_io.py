"""Run a blocking file operation off the event loop, with a deadline.

A config on a hung mount (NFS gone away, a FIFO someone put in its place) blocks the thread that reads
it, possibly forever. On the event loop that would freeze the daemon: no RPC answers, no refreshes, no
clean stop. In a thread of its own it costs that thread only: the caller gets a timeout after `timeout_s`
and retries later. The thread is a daemon thread, so a thread stuck for good never keeps the process from
exiting (a ThreadPoolExecutor's workers would: they are joined at exit). An operation given a `key` (the
files it reads) is not started again while an earlier one with that key is still stuck: a caller that
retries costs no new thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from context_harness.primitives.result import ErrorCode, Failure, Result

T = TypeVar("T")


# The keys of operations past their deadline whose thread has not returned yet.
_stuck: set[str] = set()


class StillRunning(Exception):
    """The operation did not finish within its deadline; its thread may still be blocked."""


async def run_blocking(fn: Callable[[], T], timeout_s: float, name: str = "blocking-io", key: str | None = None) -> T:
    if key is not None and key in _stuck:
        raise StillRunning("an earlier attempt is still blocked")
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
        finally:
            if key is not None:
                _call_soon(loop, _stuck.discard, key)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        if key is not None and not done.done():  # (done: the thread returned as the deadline passed)
            _stuck.add(key)
        raise StillRunning(f"not done after {timeout_s:g} s") from None


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed while the thread was blocked: nobody is waiting any more
        pass


async def run_config_io(
    work: Callable[[], Result[T]], timeout_s: float, what: str, key: str | None = None
) -> Result[T]:
    """A service call that reads or writes config files, in a thread with a deadline: a config on a hung
    mount fails this one call with TIMEOUT, and the event loop goes on serving everyone else."""
    try:
        return await run_blocking(work, timeout_s, name=what, key=key)
    except StillRunning:
        return Failure(
            f"{what} did not finish within {timeout_s:g} s: a config it reads may be on a hung mount",
            ErrorCode.TIMEOUT,
            "check the file (e.g. `ls -l` it); `chctl doctor` lists every config in use",
        )
