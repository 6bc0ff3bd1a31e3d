"""`chctl bridge NAME`: the MCP server an agent starts, relaying stdio to the daemon, which carries the traffic.

The agent writes newline-delimited JSON-RPC on our stdin and reads the daemon's on our stdout. Nothing here
knows about tokens: after `bridge.open` the daemon's connection is a plain relay for one server.

What this process guarantees the agent:
- it never exits while stdin is open (an agent marks a local server failed for good once it exits); when stdin
  closes, it answers every request it read before (a filter: `printf ... | chctl bridge NAME`), within
  EOF_ANSWER_DEADLINE_S, then exits: 0, or 1 when the daemon refused the bridge or an answer did not come;
- when the daemon goes away (restart, crash) it reconnects — starting the daemon as other commands do — and
  re-opens the session with the client's own `initialize`, so the agent does not notice; a request that was
  in flight at that moment gets an error (it may have run: sending it again is the client's call);
- on stderr only why the daemon refused the bridge (an unknown name, with the names it resembles), once per
  reason; the daemon's log says the rest.

Standard library only, and little of it: this process lives as long as the agent's session.
"""

from __future__ import annotations

import _socket
import os
import select
import time

from context_harness.client import rpc_client, wire
from context_harness.primitives.relay_errors import relay_error
from context_harness.primitives.text import printable

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

RETRY_INTERVAL_S = 0.1  # how often a lost daemon is looked for
OPEN_TIMEOUT_S = 10.0  # a daemon that accepts the connection but does not answer `bridge.open` in this time is hung
GIVE_UP_S = 15.0  # a request waiting this long for a daemon is answered with an error (it keeps looking)
# After stdin closed, the answers still owed may take this long (a tool call can be slow); then each gets an error.
EOF_ANSWER_DEADLINE_S = 60.0
AUTOSTART_EVERY_S = 30.0  # start the daemon at most this often while none answers
REFUSED_BACKOFF_S = (1.0, 10.0)  # after the daemon refuses the bridge (or is refused): wait this long, doubling, capped
READ_BYTES = 256 * 1024
# A longer line (a tool's 60 MiB answer) is read for its id and method only, never decoded whole: decoding
# costs ten times its size.
LARGE_LINE_BYTES = 1024 * 1024
OPEN_ID = "chctl-bridge-open"

STDIN, STDOUT, STDERR = 0, 1, 2


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def error_reply(request_id: Any, message: str, *, code: str, hint: str | None = None) -> bytes:
    return wire.dumps(relay_error(request_id, message, code, hint)).encode() + b"\n"


def parse(line: bytes) -> dict[str, Any] | None:
    try:
        message = wire.loads(line.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def routing(line: bytes) -> dict[str, Any] | None:
    """What the bridge looks at in a line: all of a short one; of a long one, its id and method, and `result`
    (True) when it has one."""
    if len(line) <= LARGE_LINE_BYTES:
        return parse(line)
    from context_harness.primitives import json_scan  # only now: chctl starts without `re`

    try:
        found = json_scan.scan(line, [("id",), ("method",), ("result",)])
    except json_scan.NotJson:
        return None
    if found.kind != "object":
        return None
    summary: dict[str, Any] = {"result": True} if ("result",) in found.spans else {}
    for key in ("id", "method"):
        span = found.spans.get((key,))
        if span is not None:
            summary[key] = json_scan.decode(line, span, LARGE_LINE_BYTES)
    return summary


class Bridge:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sock: _socket.socket | None = None
        self.state = "down"  # down → opening → open → (lost) down
        self.poller = select.poll()
        self.poller.register(STDIN, select.POLLIN)
        self.next_attempt = 0.0
        self.opening_since = 0.0
        self.autostarted_at = -AUTOSTART_EVERY_S
        self.autostart = os.environ.get("CH_NO_AUTOSTART") != "1"
        self.refusals = 0  # `bridge.open` refused in a row
        self.refusal: tuple[str, str, Any] = ("", "", None)  # the last one's message, code and hint
        # The client's handshake, replayed to the daemon after a reconnect once the session is established.
        self.initialize: dict[str, Any] | None = None
        self.initialized: dict[str, Any] | None = None
        self.established = False
        self.in_flight: dict[str, Any] = {}  # requests the daemon has and has not answered, by their id's JSON
        self.queue: list[tuple[float, bytes, Any]] = []  # (since, line, request id or None) while no daemon
        self.client_partial: list[bytes] = []
        self.daemon_partial: list[bytes] = []
        self.stdin_closed_at: float | None = None  # then only the answers owed are waited for

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        while True:
            now = time.monotonic()
            if self.state == "down" and now >= self.next_attempt:
                self.try_connect(now)
            if self.state == "opening" and now - self.opening_since > OPEN_TIMEOUT_S:
                self.lost()
            self.expire_queue(now)
            if self.stdin_closed_at is not None:
                done = self.after_stdin(now)
                if done is not None:
                    return done
            for fd, _events in self.poller.poll(self.poll_timeout_ms()):
                if fd == STDIN:
                    data = os.read(STDIN, READ_BYTES)
                    if data:
                        self.from_client(data)
                    else:
                        self.stdin_closed(now)
                elif self.sock is not None and fd == self.sock.fileno():
                    self.from_daemon()

    def poll_timeout_ms(self) -> int | None:
        if self.state == "open" and self.stdin_closed_at is None:
            return None
        return int(RETRY_INTERVAL_S * 1000)

    # --- stdin closed: a filter's end ---------------------------------------------------------------------

    def stdin_closed(self, now: float) -> None:
        """No more requests: an unfinished last line still counts, and what was read is still answered."""
        self.poller.unregister(STDIN)
        self.stdin_closed_at = now
        if self.client_partial:
            self.from_client(b"\n")

    def owed(self) -> list[Any]:
        """The ids of the client's requests not yet answered: queued for a daemon, or in flight there."""
        return [request_id for _since, _line, request_id in self.queue if request_id is not None] + list(
            self.in_flight.values()
        )

    def after_stdin(self, now: float) -> int | None:
        """Once stdin closed: the exit status when it is time to go (all answered, or the deadline), else None.
        The bridge is opened even when nothing is owed, so an unknown name is an error here too."""
        assert self.stdin_closed_at is not None
        owed = self.owed()
        if not owed:
            if self.state == "open" or self.refusals:  # (the refusal was told on stderr)
                self.close()
                return 0 if self.state == "open" else 1
            if self.state == "opening" or (self.autostart and now - self.stdin_closed_at < GIVE_UP_S):
                return None  # the daemon is answering, or starting: it may have a refusal to tell
            tell(f"error[DAEMON_UNAVAILABLE]: context-harnessd is not answering on {rpc_client.socket_path()}", None)
            self.close()
            return 1
        if now - self.stdin_closed_at < EOF_ANSWER_DEADLINE_S:
            return None
        for request_id in owed:
            write_all(
                STDOUT,
                error_reply(
                    request_id,
                    f"no answer within {EOF_ANSWER_DEADLINE_S:g} s after stdin closed",
                    code="TIMEOUT",
                    hint="the server may still be working on it; `chctl logs` has the relay's side",
                ),
            )
        self.close()
        return 1

    # --- the daemon connection --------------------------------------------------------------------------

    def try_connect(self, now: float) -> None:
        try:
            sock = rpc_client.connect_trusted(rpc_client.socket_path())
        except rpc_client.RpcError as refused:  # another user's daemon: it gets nothing, not even the name
            self.refused(refused.message, refused.code, refused.hint)
            return
        if sock is None:
            self.next_attempt = now + RETRY_INTERVAL_S
            self.refusals = 0  # no daemon at all: an earlier refusal's reason no longer holds
            if self.autostart and now - self.autostarted_at >= AUTOSTART_EVERY_S:
                self.autostarted_at = now
                rpc_client.start_daemon()
            return
        params: dict[str, Any] = {"name": self.name}
        if self.established and self.initialize is not None:
            params["replay"] = [m for m in (self.initialize, self.initialized) if m is not None]
        request = {"jsonrpc": "2.0", "id": OPEN_ID, "method": "bridge.open", "params": params}
        try:
            sock.sendall(wire.dumps(request).encode() + b"\n")
        except OSError:
            sock.close()
            self.next_attempt = now + RETRY_INTERVAL_S
            return
        self.sock = sock
        self.state = "opening"
        self.opening_since = now
        self.daemon_partial = []
        self.poller.register(sock.fileno(), select.POLLIN)

    def from_daemon(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_BYTES)
        except OSError:
            data = b""
        if not data:
            self.lost()
            return
        for line in split_lines(data, self.daemon_partial):
            if self.state == "opening":
                self.opened(line)
            else:
                self.to_client(line)

    def opened(self, line: bytes) -> None:
        reply = parse(line) or {}
        error = reply.get("error")
        if error is None and "result" in reply:
            self.state = "open"
            self.refusals = 0
            queued, self.queue = self.queue, []
            for _since, queued_line, request_id in queued:
                self.to_daemon(queued_line, request_id)
            return
        # The daemon cannot bridge this server (unknown, not remote...): every waiting request learns why.
        data = error.get("data") if isinstance(error, dict) else None
        data = data if isinstance(data, dict) else {}
        message = str(error.get("message")) if isinstance(error, dict) else "the daemon refused the bridge"
        code, hint = str(data.get("code", "INTERNAL")), data.get("hint")
        self.drop_connection()
        self.refused(message, code, hint if isinstance(hint, str) else None)

    def refused(self, message: str, code: str, hint: str | None) -> None:
        """Every request waiting for the daemon learns why it cannot be carried; ask again after a backoff."""
        first, cap = REFUSED_BACKOFF_S
        self.next_attempt = time.monotonic() + min(first * 2**self.refusals, cap)
        self.refusals += 1
        if self.refusal != (message, code, hint):  # a person running it by hand sees why, once per reason
            self.refusal = (message, code, hint)
            tell(f"error[{printable(code)}]: {printable(message)}", hint)
        for _since, _line, request_id in self.queue:
            if request_id is not None:
                write_all(STDOUT, error_reply(request_id, message, code=code, hint=hint))
        self.queue = []

    def lost(self) -> None:
        """The daemon went away: answer what it had, then look for it again."""
        self.drop_connection()
        self.next_attempt = time.monotonic()
        for request_id in self.in_flight.values():
            write_all(
                STDOUT,
                error_reply(
                    request_id,
                    "context-harnessd went away while this request was in flight",
                    code="DAEMON_UNAVAILABLE",
                    hint="send it again: the bridge has reconnected or is reconnecting",
                ),
            )
        self.in_flight = {}

    def drop_connection(self) -> None:
        if self.sock is not None:
            self.poller.unregister(self.sock.fileno())
            self.sock.close()
        self.sock = None
        self.state = "down"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the daemon ends the upstream session

    # --- messages ---------------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        for line in split_lines(data, self.client_partial):
            if not line.strip():
                continue
            message = routing(line) or {}
            method = message.get("method")
            if method in ("initialize", "notifications/initialized") and len(line) > LARGE_LINE_BYTES:
                message = parse(line) or {}  # kept whole, to be replayed
            request_id = message.get("id") if method is not None else None
            if method == "initialize":
                self.initialize, self.initialized, self.established = message, None, False
            elif method == "notifications/initialized":
                self.initialized = message
            if self.state == "open":
                self.to_daemon(line, request_id)
            elif self.refusals and request_id is not None:  # refused a moment ago: the same answer, at once
                text, code, hint = self.refusal
                write_all(STDOUT, error_reply(request_id, text, code=code, hint=hint))
            else:
                self.queue.append((time.monotonic(), line, request_id))
                if not self.refusals:  # a lost daemon is looked for at once; a refusal's backoff holds
                    self.next_attempt = min(self.next_attempt, time.monotonic())

    def to_daemon(self, line: bytes, request_id: Any) -> None:
        assert self.sock is not None
        if request_id is not None:
            self.in_flight[wire.dumps(request_id)] = request_id
        try:
            self.sock.sendall(line + b"\n")
        except OSError:
            self.lost()

    def to_client(self, line: bytes) -> None:
        message = routing(line)
        if message is not None and "method" not in message and "id" in message:
            request_id = message["id"]
            self.in_flight.pop(wire.dumps(request_id), None)
            if self.initialize is not None and request_id == self.initialize.get("id") and "result" in message:
                self.established = True
        write_all(STDOUT, line + b"\n")

    def expire_queue(self, now: float) -> None:
        if self.state == "open" or not self.queue or now - self.queue[0][0] < GIVE_UP_S:
            return
        keep = []
        for since, line, request_id in self.queue:
            if now - since < GIVE_UP_S:
                keep.append((since, line, request_id))
            elif request_id is not None:
                write_all(
                    STDOUT,
                    error_reply(
                        request_id,
                        f"context-harnessd is not answering on {rpc_client.socket_path()}",
                        code="DAEMON_UNAVAILABLE",
                        hint="start it with `chctl daemon start`; see `chctl doctor`",
                    ),
                )
        self.queue = keep


def tell(line: str, hint: str | None) -> None:
    """A line (and its hint) on stderr; an agent that closed it does not stop the bridge."""
    text = line + (f"\n  hint: {printable(hint)}" if hint else "") + "\n"
    try:
        write_all(STDERR, text.encode("utf-8", "replace"))
    except OSError:
        pass


def split_lines(data: bytes, partial: list[bytes]) -> list[bytes]:
    """The complete lines in `data`, with what `partial` held before; the unfinished rest goes back there."""
    lines = []
    while (end := data.find(b"\n")) != -1:
        lines.append(b"".join([*partial, data[:end]]))
        partial.clear()
        data = data[end + 1 :]
    if data:
        partial.append(data)
    return lines


def run(name: str) -> int:
    try:
        return Bridge(name).run()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
