"""chctl's side of the socket: find it, start the daemon if nobody answers, send one request, read one reply.

Standard library only: chctl must start about as fast as a bare `python3`. So only modules that cost nothing
are imported up front: `_socket` rather than `socket` (which imports `enum` and `selectors`), `wire` rather than
`json`; subprocess only when the daemon has to be started; paths are plain strings (pathlib costs ~2 ms).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from context_harness.client import wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms of start-up)

if TYPE_CHECKING:
    import subprocess
    from typing import Any

# A loaded machine with a cold disk cache can take several seconds to import the daemon; one that gave up
# (e.g. it refuses an untrusted CH_HOME) is noticed at once, so only a slow start waits this long.
AUTOSTART_WAIT_S = 30.0
# A daemon that exited may have lost a race with another starting at the same moment: give that one a while.
AFTER_EXIT_WAIT_S = 3.0
AUTOSTART_NOTICE_S = 0.5  # a pause longer than this gets explained: "starting the daemon…"
_PROTOCOL_CODES = {-32602: "INVALID_PARAMS", -32601: "NOT_FOUND", -32600: "INVALID_PARAMS", -32700: "INVALID_PARAMS"}
POLL_INTERVAL_S = 0.05
PRIVATE_DIR_MODE = 0o700
NOT_ANSWERING = "the daemon is not answering on"  # nobody listens, and chctl was not to start one
REFUSAL_PREFIX = "context-harnessd: "  # how the daemon's refusals to start begin (daemon/app.py)
REFUSAL_TAIL_BYTES = 4096


class RpcError(Exception):
    """A JSON-RPC error reply, or no daemon at all. `code` is an ErrorCode name."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


def state_home() -> str:
    return os.path.normpath(os.environ.get("CH_HOME") or os.path.join(os.path.expanduser("~"), ".context-harness"))


def socket_path() -> str:
    """Same rule as the daemon's settings: CH_SOCKET, else $XDG_RUNTIME_DIR/context-harness, else CH_HOME/run."""
    if os.environ.get("CH_SOCKET"):
        return os.path.normpath(os.environ["CH_SOCKET"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(os.path.normpath(runtime), "context-harness", "chd.sock")
    return os.path.join(state_home(), "run", "chd.sock")


def daemon_log() -> str:
    return os.path.join(state_home(), "daemon.log")


def _connect(path: str) -> _socket.socket | None:
    """A connection to whoever listens on `path`, or None; see `connect_trusted` before sending anything."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def connect_trusted(path: str) -> _socket.socket | None:
    """A connection to the user's own daemon on `path`, or None when nobody listens; RpcError DAEMON_UNTRUSTED
    (and nothing sent) when the listener is another user's."""
    sock = _connect(path)
    if sock is None:
        return None
    foreign = foreign_daemon(sock, path)
    if foreign is not None:
        sock.close()
        raise RpcError("DAEMON_UNTRUSTED", *foreign)
    return sock


# --- whose daemon is listening ----------------------------------------------------------------------------
# In a shared runtime directory another user can create `context-harness/` first and listen there; a key sent
# to that socket is theirs. So chctl and `chctl bridge` ask the kernel who the peer is (SO_PEERCRED on Linux,
# LOCAL_PEERCRED on macOS) and talk only to a daemon of their own uid. Where neither exists, the owner of the
# socket file stands in: the daemon binds it itself, so its owner is the daemon's user. (No `struct` import:
# the uid is read from the bytes.)

# struct ucred (Linux): pid, uid, gid as native ints; struct xucred (macOS): version, uid, ngroups, groups[16].
_UCRED_SIZE = 12
_XUCRED_SIZE = 76
_UID_SLICE = slice(4, 8)  # the uid is the second 32-bit field of both
_MACOS_SOL_LOCAL = 0
_MACOS_LOCAL_PEERCRED = 0x001


def peer_uid(sock: _socket.socket, path: str) -> int | None:
    """The uid of the process that listens on `sock` (connected to `path`); None when it cannot be told."""
    try:
        if sys.platform.startswith("linux"):
            raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED_SIZE)
            return int.from_bytes(raw[_UID_SLICE], sys.byteorder)
        if sys.platform == "darwin":
            option = getattr(_socket, "LOCAL_PEERCRED", _MACOS_LOCAL_PEERCRED)
            raw = sock.getsockopt(_MACOS_SOL_LOCAL, option, _XUCRED_SIZE)
            return int.from_bytes(raw[_UID_SLICE], sys.byteorder)
        return os.stat(path).st_uid
    except OSError:
        return None


def foreign_daemon(sock: _socket.socket, path: str) -> tuple[str, str] | None:
    """(message, hint) when the daemon on `sock` is not the user's own; None when it is."""
    uid, mine = peer_uid(sock, path), os.getuid()
    if uid == mine:
        return None
    who = "an unknown user" if uid is None else f"uid {uid}"
    return (
        f"refusing the daemon on {path}: it runs as {who}, not as you (uid {mine}); nothing was sent to it",
        "another user may be waiting there for your keys: set CH_SOCKET to a path in a directory only you can "
        "write (e.g. CH_SOCKET=~/.context-harness/run/chd.sock), and have the other socket's directory removed",
    )


# `-I`: the daemon never imports from the working directory, PYTHONPATH or user site-packages (a
# `structlog.py` where the user typed `chctl status` must not run inside the daemon).
DAEMON_ARGV = ("-I", "-m", "context_harness.daemon")
# And it runs in `/`, so nothing it does depends on (or happens in) the directory chctl was started from.
DAEMON_CWD = "/"


def daemon_command(*, settings: bool = True) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start the daemon: this environment's documented settings (with `settings`) and
    the variables that say where the user's files are, nothing else (see daemon_env.py)."""
    from context_harness.client.daemon_env import daemon_environment

    return [sys.executable, *DAEMON_ARGV], daemon_environment(os.environ, settings=settings)


def make_state_home() -> None:
    """CH_HOME, made 0700 whatever the umask (the daemon refuses a home others can write)."""
    home = state_home()
    try:
        os.makedirs(home, mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        return
    os.chmod(home, PRIVATE_DIR_MODE)  # makedirs' mode passes through the umask


def start_daemon(*, settings: bool = True) -> subprocess.Popen[bytes]:
    """Start context-harnessd in the background, detached from this terminal; its log goes to CH_HOME/daemon.log.
    Without `settings` it takes none from this environment: daemon.env alone (the Python API's way)."""
    import subprocess

    make_state_home()
    log_fd = os.open(daemon_log(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    argv, env = daemon_command(settings=settings)
    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=DAEMON_CWD,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)


def connect(*, autostart: bool = True, settings: bool = True) -> _socket.socket:
    """A connection to the user's daemon, started first if none answers and `autostart` (with this environment's
    settings, or daemon.env alone: `settings`)."""
    path = socket_path()
    sock = connect_trusted(path)
    if sock is not None:
        return sock
    if not autostart or os.environ.get("CH_NO_AUTOSTART") == "1":
        raise RpcError(
            "DAEMON_UNAVAILABLE",
            f"{NOT_ANSWERING} {path}",
            "start it with `chctl daemon start` (or `context-harnessd` in a terminal)",
        )
    daemon = start_daemon(settings=settings)
    started = time.monotonic()
    deadline = started + AUTOSTART_WAIT_S
    said = False
    while time.monotonic() < deadline:
        sock = connect_trusted(path)
        if sock is not None:
            return sock
        if daemon.poll() is not None and deadline > time.monotonic() + AFTER_EXIT_WAIT_S:
            deadline = time.monotonic() + AFTER_EXIT_WAIT_S
        if not said and time.monotonic() > started + AUTOSTART_NOTICE_S:
            print("starting the daemon…", file=sys.stderr, flush=True)
            said = True
        time.sleep(POLL_INTERVAL_S)
    exited = f" (it exited with code {daemon.returncode}{_refusal()})" if daemon.poll() is not None else ""
    raise RpcError(
        "DAEMON_UNAVAILABLE",
        f"started context-harnessd but it did not answer on {path}{exited}",
        f"see {daemon_log()}, or run `chctl daemon run` to watch it start",
    )


def _refusal() -> str:
    """`: why`, when the daemon's log ends with its own refusal to start (an untrusted CH_HOME or CA bundle, a
    bad setting: each names the path or setting and the fix); else nothing."""
    try:
        with open(daemon_log(), "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - REFUSAL_TAIL_BYTES))
            last = log.read().decode(errors="replace").rstrip("\n").rpartition("\n")[2]
    except OSError:
        return ""
    return f": {last.removeprefix(REFUSAL_PREFIX)}" if last.startswith(REFUSAL_PREFIX) else ""


def _read_line(sock: _socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def call(method: str, params: dict[str, Any] | None = None, *, autostart: bool = True, settings: bool = True) -> Any:
    sock = connect(autostart=autostart, settings=settings)
    try:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        sock.sendall(wire.dumps(request).encode() + b"\n")
        line = _read_line(sock)
    finally:
        sock.close()
    if not line:
        raise RpcError(
            "DAEMON_UNAVAILABLE", "the daemon closed the connection without answering", f"see {daemon_log()}"
        )
    reply = wire.loads(line.decode())
    if "error" in reply:
        error = reply["error"]
        data = error.get("data") or {}
        code = data.get("code") or _PROTOCOL_CODES.get(error.get("code"), "INTERNAL")
        return _raise(code, error.get("message", "unknown error"), data.get("hint"))
    return reply.get("result")


def _raise(code: str, message: str, hint: str | None) -> Any:
    raise RpcError(code, message, hint)
