"""An incremental parser for Server-Sent Events (the WHATWG event-stream format), fed bytes as they arrive.

Pure: no I/O. The upstream transports feed it each chunk read from the response and relay every complete
event at once, so a progress notification reaches the client while the tool is still running. A line or an
event's data larger than one message is refused (TooLarge): nothing a server sends is buffered beyond it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from context_harness.upstream.limits import MAX_MESSAGE_BYTES, TooLarge


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None  # the stream's last event id after this event (for Last-Event-ID)
    retry_ms: int | None = None


class SseParser:
    """Caps: a line, and an event's data, may hold one message (`limit` bytes); past that, TooLarge."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # how far the buffer is known to hold no line ending: a long line is searched once
        self._data = bytearray()  # the event's data lines so far, each followed by a LF
        self._data_lines = 0
        self._event = ""
        self._retry_ms: int | None = None
        self.last_event_id: str | None = None
        # The stream's reconnection time (its last `retry:` field, WHATWG): how long to wait before reconnecting
        # with Last-Event-ID once the server has closed it (SEP-1699).
        self.reconnect_ms: int | None = None

    def resumed(self) -> SseParser:
        """A parser for the next connection of the same stream: no partial line, the same id and retry."""
        parser = SseParser(self.limit)
        parser.last_event_id, parser.reconnect_ms = self.last_event_id, self.reconnect_ms
        return parser

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk` (an event ends at a blank line)."""
        buffer = self._buffer
        buffer += chunk
        events: list[Event] = []
        start = 0
        while True:
            end, ending = _line_end(buffer, start, max(start, self._scanned))
            if ending == 0:
                break
            self._scanned = 0
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + ending
        if start:
            del buffer[:start]
        if len(buffer) > self.limit:
            raise TooLarge
        # A CR at the very end may be the first half of a CRLF: look at it again with the next chunk.
        self._scanned = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        return events

    def _line(self, line: bytearray) -> Event | None:
        if line == b"":
            return self._dispatch()
        if line.startswith(b":"):  # a comment (servers send them as keep-alives)
            return None
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"data":
            if len(self._data) + len(value) >= self.limit:
                raise TooLarge
            self._data += value
            self._data += b"\n"
            self._data_lines += 1
        elif field == b"event":
            self._event = value.decode("utf-8", errors="replace")
        elif field == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", errors="replace")
        elif field == b"retry" and value.isdigit() and value.isascii():
            self._retry_ms = self.reconnect_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, lines, kind, retry = self._data, self._data_lines, self._event or "message", self._retry_ms
        self._data, self._data_lines, self._event, self._retry_ms = bytearray(), 0, "", None
        if not lines:
            return None
        del data[-1]  # the last line's LF
        text = data.decode("utf-8", errors="replace")
        return Event(data=text, event=kind, id=self.last_event_id, retry_ms=retry)


def _line_end(buffer: bytearray, start: int, search_from: int) -> tuple[int, int]:
    """Where the line starting at `start` ends and the length of its ending (LF, CRLF or CR); (0, 0) while
    no complete line is buffered. Bytes before `search_from` hold no line ending. A CR at the very end may
    be the first half of a CRLF: wait for more."""
    lf = buffer.find(b"\n", search_from)
    cr = buffer.find(b"\r", search_from, lf if lf != -1 else len(buffer))
    if cr == -1:
        return (lf, 1) if lf != -1 else (0, 0)
    if cr + 1 == len(buffer):
        return 0, 0
    return cr, 2 if buffer[cr + 1] == 0x0A else 1


def json_messages(events: list[Event]) -> tuple[list[Any], int]:
    """The JSON values in the `message` events (a JSON-RPC message or batch each), and how many were not JSON."""
    found, unreadable = [], 0
    for event in events:
        if event.event != "message" or not event.data.strip():
            continue
        try:
            found.append(json.loads(event.data))
        except ValueError:
            unreadable += 1
    return found, unreadable
