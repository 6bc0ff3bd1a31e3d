"""The daemon works under the unit's MemoryDenyWriteExecute=yes: nothing it loads (aiohttp, pydantic-core,
ssl, structlog) needs writable executable memory. The kernel's PR_SET_MDWE (Linux 6.3+) enforces the same
rule on the real daemon process as systemd's filter would; the daemon then logs in and refreshes."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from tests.oauth_fakes import FakeWorld, running_world
from tests.support.daemon import DaemonProcess
from tests.support.env import UserEnv
from tests.support.login import call, login

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# Sets MDWE on itself (kept across execve and by children), then becomes the daemon.
MDWE_WRAPPER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit('prctl(PR_SET_MDWE) failed: errno %d' % ctypes.get_errno())\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return sys.platform.startswith("linux") and libc.prctl(66, 0, 0, 0, 0) >= 0  # PR_GET_MDWE


@pytest.mark.skipif(not _mdwe_supported(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_the_wrapper_puts_the_program_it_starts_under_mdwe() -> None:
    probe = "import ctypes; print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))"  # PR_GET_MDWE
    done = subprocess.run(
        [sys.executable, "-c", MDWE_WRAPPER, sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(PR_MDWE_REFUSE_EXEC_GAIN)


@pytest.mark.skipif(not _mdwe_supported(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
async def test_the_daemon_logs_in_and_refreshes_with_writable_executable_memory_refused(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env, wrapper=[sys.executable, "-c", MDWE_WRAPPER]).start()
    try:
        async with running_world(FakeWorld()) as world:
            assert "result" in await login(user_env, world)
            refreshed = await call(user_env, "token.refresh", name="srv")
            assert "result" in refreshed, refreshed
        assert process.proc.poll() is None
    finally:
        process.stop()
