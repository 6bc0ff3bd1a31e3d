"""An incremental parser for Server-Sent Events (the WHATWG event-stream format), fed bytes as they arrive.

Pure: no I/O. The upstream transports feed it each chunk read from the response and relay every complete
event at once, so a progress notification reaches the client while the tool is still running. A line or an
event's data larger than one message is refused (TooLarge): nothing a server sends is buffered beyond it.

A `data:` line goes straight into its event's data as it arrives, so a line as long as a whole message is
held once, never as a line and again as data; a comment or an unknown field is counted and dropped; `event`,
`id` and `retry` keep MAX_FIELD_BYTES (longer values are nobody's: the event is not a message, the id is not
kept, the retry is not a number).
"""

from __future__ import annotations

from dataclasses import dataclass

from context_harness.primitives.json_scan import NotJson
from context_harness.upstream.limits import MAX_MESSAGE_BYTES, TooLarge
from context_harness.upstream.messages import Message

MAX_FIELD_BYTES = 4096
_FIELDS = (b"data", b"event", b"id", b"retry")
_LONGEST_FIELD = max(len(f) for f in _FIELDS)
_IGNORED = b""  # a comment, or a field of no meaning to us: counted, not kept
_TOO_LONG = "\0too long"  # an event type no server names


@dataclass(frozen=True, slots=True)
class Event:
    data: bytes | bytearray
    event: str = "message"
    id: str | None = None  # the stream's last event id after this event (for Last-Event-ID)
    retry_ms: int | None = None


class SseParser:
    """Caps: a line, and an event's data, may hold one message (`limit` bytes); past that, TooLarge."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.limit = limit
        self._after_cr = False  # the last chunk ended with a CR: a LF opening the next one belongs to it
        self._line_bytes = 0  # the current line's length so far
        self._head = bytearray()  # the current line's start, until its field name is known
        self._field: bytes | None = None  # the current line's field, once known
        self._value = bytearray()  # the value of an `event`, `id` or `retry` line
        self._value_started = False  # a leading space of the value has been dealt with
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
        events: list[Event] = []
        size = len(chunk)
        if not size:
            return events  # nothing read: a CR that ended the last chunk still waits for its LF
        pos = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        self._after_cr = False
        lf = -1
        while pos < size:
            if lf < pos:  # found once per line feed, so a run of CR-only lines is not searched again and again
                lf = chunk.find(b"\n", pos)
                if lf == -1:
                    lf = size
            cr = chunk.find(b"\r", pos, lf)
            end = cr if cr != -1 else lf
            self._take(chunk, pos, end)
            if end == size:
                break
            event = self._end_line()
            if event is not None:
                events.append(event)
            if cr == -1:
                pos = lf + 1
            elif cr + 1 == size:
                self._after_cr = True
                pos = size
            else:
                pos = cr + 2 if chunk[cr + 1] == 0x0A else cr + 1
        return events

    def _take(self, chunk: bytes, start: int, end: int) -> None:
        """Part of the current line: into the event's data, the field's value, or nowhere."""
        if start == end:
            return
        self._line_bytes += end - start
        if self._line_bytes > self.limit:
            raise TooLarge
        if self._field is None:
            held = len(self._head)
            self._head += chunk[start : min(end, start + _LONGEST_FIELD + 1)]
            colon = self._head.find(b":")  # in the part just added: the field would be known otherwise
            if colon == -1:
                if len(self._head) > _LONGEST_FIELD:
                    self._field = _IGNORED
                return
            name = bytes(self._head[:colon])
            self._field = name if name in _FIELDS else _IGNORED  # a line starting with ":" is a comment
            start += colon + 1 - held
        if self._field == _IGNORED or start == end:
            return
        if not self._value_started:
            self._value_started = True
            if chunk[start] == 0x20:  # one space after the colon is not part of the value
                start += 1
        if self._field == b"data":
            if len(self._data) + end - start >= self.limit:
                raise TooLarge
            self._data += chunk[start:end]
        elif len(self._value) <= MAX_FIELD_BYTES:
            self._value += chunk[start : min(end, start + MAX_FIELD_BYTES + 1)]

    def _end_line(self) -> Event | None:
        if self._field is None and not self._line_bytes:
            return self._dispatch()  # a blank line
        field, value = self._field, self._value
        if field is None:  # no colon: the whole line names the field, and its value is empty
            field = bytes(self._head)
        self._line_bytes, self._field, self._value, self._value_started = 0, None, bytearray(), False
        self._head.clear()
        too_long = len(value) > MAX_FIELD_BYTES
        if field == b"data":
            if len(self._data) + 1 >= self.limit:
                raise TooLarge
            self._data += b"\n"
            self._data_lines += 1
        elif field == b"event":
            self._event = _TOO_LONG if too_long else value.decode("utf-8", errors="replace")
        elif field == b"id" and b"\0" not in value and not too_long:
            self.last_event_id = value.decode("utf-8", errors="replace")
        elif field == b"retry" and value.isdigit() and value.isascii() and not too_long:
            self._retry_ms = self.reconnect_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, lines, kind, retry = self._data, self._data_lines, self._event or "message", self._retry_ms
        self._data, self._data_lines, self._event, self._retry_ms = bytearray(), 0, "", None
        if not lines:
            return None
        del data[-1]  # the last line's LF
        return Event(data=data, event=kind, id=self.last_event_id, retry_ms=retry)


async def json_messages(events: list[Event]) -> tuple[list[Message], int]:
    """The JSON-RPC messages (or batches) in the `message` events, and how many events were not JSON."""
    found, unreadable = [], 0
    for event in events:
        if event.event != "message" or not event.data or event.data.isspace():
            continue
        try:
            found.append(await Message.read(event.data))
        except NotJson:
            unreadable += 1
    return found, unreadable
