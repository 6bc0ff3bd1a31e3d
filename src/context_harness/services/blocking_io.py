"""Run a blocking file operation off the event loop, with a deadline, on a bounded number of threads.

A config on a hung mount (NFS gone away, a FIFO someone put in its place) blocks the thread that reads
it, possibly forever. On the event loop that would freeze the daemon: no RPC answers, no refreshes, no
clean stop. In a thread of its own it costs that thread only: the caller gets a timeout after `timeout_s`
and retries later. An operation given a `key` (the files it reads) is not started again while an earlier
one with that key is still stuck: a caller that retries costs no new thread.

At most CONFIG_IO_THREADS operations run at once (an anyio `CapacityLimiter`); a thread holds its place
until it returns, stuck or not, so a burst of requests or a handful of hung files never grows the thread
count past it: more wait for a place, within their own deadline. The threads are our own daemon threads,
not anyio's worker threads (`anyio.to_thread.run_sync`): those are joined at exit, so a thread stuck for
good would keep the daemon from stopping on SIGTERM (tests/test_hung_config.py).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import anyio

from context_harness.primitives.result import ErrorCode, Failure, Result

T = TypeVar("T")

CONFIG_IO_THREADS = 8  # a config read or write takes milliseconds: eight at once is plenty

# The keys of operations past their deadline whose thread has not returned yet.
_stuck: set[str] = set()
# One limiter per event loop (a limiter belongs to the loop it waits on; tests run many loops).
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


class StillRunning(Exception):
    """The operation did not finish within its deadline; its thread may still be blocked."""


async def run_blocking(fn: Callable[[], T], timeout_s: float, name: str = "blocking-io", key: str | None = None) -> T:
    if key is not None and key in _stuck:
        raise StillRunning("an earlier attempt is still blocked")
    loop = asyncio.get_running_loop()
    limiter = _limiter(loop)
    done: asyncio.Future[T] = loop.create_future()
    place = object()  # who holds the limiter's place: the thread, until it returns
    returned = False  # set on the loop when the thread's result arrives

    def settle(value: T | None, error: BaseException | None) -> None:
        nonlocal returned
        returned = True
        limiter.release_on_behalf_of(place)
        if key is not None:
            _stuck.discard(key)
        if done.done():  # the caller gave up (deadline) or was cancelled
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

    deadline = loop.time() + timeout_s
    try:  # a free place is taken at once: waiting for one (within the deadline) only when all are taken
        limiter.acquire_on_behalf_of_nowait(place)
    except anyio.WouldBlock:
        try:
            await asyncio.wait_for(limiter.acquire_on_behalf_of(place), timeout_s)
        except TimeoutError:
            raise StillRunning(f"no thread free within {timeout_s:g} s") from None
    try:
        threading.Thread(target=work, name=name, daemon=True).start()
    except BaseException:  # no thread to give the place back: give it back here
        limiter.release_on_behalf_of(place)
        raise
    try:  # shielded: the deadline leaves the thread running, and `settle` drops its late result
        return await asyncio.wait_for(asyncio.shield(done), max(deadline - loop.time(), 0))
    except TimeoutError:
        if key is not None and not returned:  # (returned: the thread came back as the deadline passed)
            _stuck.add(key)
        raise StillRunning(f"not done after {timeout_s:g} s") from None


def _limiter(loop: asyncio.AbstractEventLoop) -> anyio.CapacityLimiter:
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(CONFIG_IO_THREADS)
    return limiter


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
