"""An incremental parser for Server-Sent Events (the WHATWG event-stream format), fed bytes as they arrive.

Pure: no I/O. The upstream transports feed it each chunk read from the response and relay every complete
event at once, so a progress notification reaches the client while the tool is still running.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None  # the stream's last event id after this event (for Last-Event-ID)
    retry_ms: int | None = None


class SseParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._retry_ms: int | None = None
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk` (an event ends at a blank line)."""
        buffer = self._buffer + chunk
        events: list[Event] = []
        start = 0
        while True:
            end, ending = _line_end(buffer, start)
            if ending == 0:
                break
            event = self._line(buffer[start:end].decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
            start = end + ending
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):  # a comment (servers send them as keep-alives)
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_event_id = value
        elif field == "retry" and value.isdigit():
            self._retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, kind, retry = self._data, self._event or "message", self._retry_ms
        self._data, self._event, self._retry_ms = [], "", None
        if not data:
            return None
        return Event(data="\n".join(data), event=kind, id=self.last_event_id, retry_ms=retry)


def _line_end(buffer: bytes, start: int) -> tuple[int, int]:
    """Where the line starting at `start` ends and the length of its ending (LF, CRLF or CR); (0, 0) while
    no complete line is buffered. A CR at the very end may be the first half of a CRLF: wait for more."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf != -1 else len(buffer))
    if cr == -1:
        return (lf, 1) if lf != -1 else (0, 0)
    if cr + 1 == len(buffer):
        return 0, 0
    return cr, 2 if buffer[cr + 1] == 0x0A else 1
