"""Reading a JSON text without building it: where the members a caller asks for lie, and how many elements the
arrays it asks about hold. The whole text is checked against the JSON grammar (RFC 8259: strings, escapes,
numbers, nesting) and must be UTF-8, so what passes is a text any JSON parser reads.

Why not `json.loads`: it decodes the whole text into a str (up to four times its size) and builds every
object in it — a 60 MiB `tools/list` page cost the relay 700 MiB, only to learn its id. Why not a streaming
parser from PyPI (ijson, json-stream): their fast backends are compiled code, their pure-Python backends take
a Python step per token. Here regular expressions consume whole runs of tokens in C; Python steps in only at
containers nested deeper than two levels inside their neighbours and along the paths asked for.

Bounded work: every regular expression sees at most WINDOW bytes, a long string or number is read window by
window, and `steps` yields every STEP_S of work, so a caller on an event loop lets others run in
between (`upstream.messages.scan_async`). Memory: the spans asked for, and one small frame per level of
nesting (at most MAX_DEPTH). Standard library only, and no asyncio: `chctl bridge` uses it for long lines.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Path = tuple[str, ...]
Span = tuple[int, int]
Data = bytes | bytearray

WINDOW = 256 * 1024  # what one regular expression may look at: about a millisecond
# A step, between two chances for others to run, lasts this long (plus one window at most): a busy daemon
# answers `daemon.status` in a few steps.
STEP_S = 0.002
MAX_DEPTH = 512  # levels of nesting (json.loads gives up near 1,000; MCP messages use a few dozen)
MAX_KEY_BYTES = 1024  # a key longer than this is nobody's member name: it is skipped, not decoded
MAX_ELEMENTS = 4096  # top-level elements listed (a batch): a longer one is refused

_WS = rb"[ \t\n\r]*+"
_STRING = rb'"[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+"'
# A number must be seen to end: a window may cut it short, and its first digits are a number too.
_NUMBER = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?(?=[ \t\n\r,\]}])"
_SCALAR = rb"(?:" + _STRING + rb"|" + _NUMBER + rb"|true|false|null)"


def _container(value: bytes) -> bytes:
    """An array or object whose elements and member values are `value`."""
    array = rb"\[" + _WS + rb"(?:" + value + _WS + rb"(?:," + _WS + value + _WS + rb")*+)?\]"
    member = _STRING + _WS + rb":" + _WS + value + _WS
    obj = rb"\{" + _WS + rb"(?:" + member + rb"(?:," + _WS + member + rb")*+)?\}"
    return rb"(?:" + array + rb"|" + obj + rb")"


# A value nested at most two levels (a JSON Schema property, a content block): consumed whole, in C.
_SHALLOW = rb"(?:" + _SCALAR + rb"|" + _container(rb"(?:" + _SCALAR + rb"|" + _container(_SCALAR) + rb")") + rb")"

_SPACE = re.compile(_WS)
_STRING_PART = re.compile(rb'[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+')
_DIGITS = re.compile(rb"[0-9]*+")
_SHALLOW_VALUE = re.compile(_WS + _SHALLOW)
_AFTER = re.compile(_WS + rb"(?:(?P<comma>,)|(?P<close>[\]}]))")
_EMPTY = re.compile(_WS + rb"(?P<close>[\]}])")
# Runs of elements or members, each followed by a comma, then the last one and the close, or the opening
# of a value nested deeper; otherwise the run stops after its last comma (a window's end, a long token).
_ARRAY_RUN = re.compile(
    _WS + rb"(?:" + _SHALLOW + _WS + rb"," + _WS + rb")*+(?:" + _SHALLOW + _WS + rb"(?P<close>\])|(?P<open>[\[{]))?"
)
_MEMBER = _STRING + _WS + rb":" + _WS
_OBJECT_RUN = re.compile(
    _WS
    + rb"(?:"
    + _MEMBER
    + _SHALLOW
    + _WS
    + rb","
    + _WS
    + rb")*+(?:"
    + _MEMBER
    + rb"(?:"
    + _SHALLOW
    + _WS
    + rb"(?P<close>\})|(?P<open>[\[{])))?"
)
_KEY = re.compile(_WS + rb"(?P<key>" + _STRING + rb")" + _WS + rb":")
_CLOSERS = {0x7B: 0x7D, 0x5B: 0x5D}  # { } [ ]


class NotJson(ValueError):
    """The text is not one JSON value (or nests deeper than MAX_DEPTH, or lists more than MAX_ELEMENTS)."""


@dataclass(slots=True)
class Scanned:
    kind: Literal["object", "array"]
    spans: dict[Path, Span] = field(default_factory=dict)  # each path asked for that is there: its value
    counts: dict[Path, int] = field(default_factory=dict)  # each array asked to count that is there
    elements: list[Span] | None = None  # the top-level array's elements, when asked


@functools.lru_cache(maxsize=64)
def _run_past(names: frozenset[str]) -> re.Pattern[bytes]:
    """Members whose key is none of `names` and has no escape (so cannot spell one), each with a comma."""
    others = rb"(?!\"(?:" + b"|".join(re.escape(n.encode()) for n in sorted(names)) + rb")\")" if names else b""
    plain = rb'"[^"\\\x00-\x1f]*+"'
    return re.compile(_WS + rb"(?:" + others + plain + _WS + rb":" + _WS + _SHALLOW + _WS + rb"," + _WS + rb")*+")


class _Frame:
    """One open container: what is known about it and what the caller wants from inside it."""

    __slots__ = ("after", "closer", "count", "first", "names", "path", "record", "start")

    def __init__(self, opener: int, start: int, path: Path | None, names: frozenset[str] | None) -> None:
        self.closer = _CLOSERS[opener]
        self.start = start
        self.path = path  # where it is, while a path asked for goes through it
        self.names = names  # the member names to look at inside it (None: nothing inside is asked for)
        self.record = False  # its span is asked for
        self.count: int | None = None  # its elements, when asked
        self.first = True  # nothing read inside it yet
        self.after = False  # a value inside it has just ended: a comma or its close comes next


class _Scanner:
    def __init__(
        self, data: Data, wanted: frozenset[Path], counted: frozenset[Path], elements: bool, start: int, end: int
    ) -> None:
        self.data = data
        self.end = end
        self.pos = start
        self.wanted = wanted
        self.counted = counted
        self.prefixes = {path[:i] for path in wanted | counted for i in range(len(path))}
        self.list_elements = elements
        self.found = Scanned("object")
        self.stack: list[_Frame] = []

    # --- what is asked for ----------------------------------------------------------------------------------

    def names_under(self, path: Path) -> frozenset[str] | None:
        if path not in self.prefixes:
            return None
        depth = len(path)
        return frozenset(p[depth] for p in self.wanted | self.counted if len(p) > depth and p[:depth] == path)

    def forget(self, path: Path) -> None:
        """A repeated key: its earlier value and whatever was found inside it no longer count (json.loads keeps
        the last)."""
        for found in (self.found.spans, self.found.counts):
            for stale in [p for p in found if p[: len(path)] == path]:
                del found[stale]

    # --- the walk -----------------------------------------------------------------------------------------------

    def steps(self) -> Generator[None, None, Scanned]:
        yield from self.check_utf8()
        data, end = self.data, self.end
        self.pos = self.space(self.pos)
        if self.pos >= end or data[self.pos] not in _CLOSERS:
            raise NotJson("not an object or an array")
        self.found.kind = "object" if data[self.pos] == 0x7B else "array"
        self.open(self.pos, () if () in self.prefixes or () in self.wanted or () in self.counted else None)
        if self.list_elements:
            if self.found.kind != "array":
                raise NotJson("not an array")
            self.found.elements = []
        since = time.perf_counter()
        while self.stack:
            self.turn()
            if time.perf_counter() - since >= STEP_S:
                yield
                since = time.perf_counter()
        if self.space(self.pos) != end:
            raise NotJson("more after the value")
        return self.found

    def check_utf8(self) -> Generator[None, None, None]:
        view = memoryview(self.data)
        try:
            at, since = self.pos, time.perf_counter()
            while at < self.end:
                stop = min(self.end, at + WINDOW)
                _text, used = codecs.utf_8_decode(view[at:stop], "strict", stop == self.end)
                at += used
                if used == 0:
                    raise NotJson("not UTF-8")
                if time.perf_counter() - since >= STEP_S:
                    yield
                    since = time.perf_counter()
        except UnicodeDecodeError:
            raise NotJson("not UTF-8") from None
        finally:
            view.release()

    def turn(self) -> None:
        """One move inside the innermost open container."""
        frame = self.stack[-1]
        if frame.after:
            self.comma_or_close(frame)
        elif frame.names is not None:
            self.member(frame)
        elif frame.count is not None or (self.list_elements and len(self.stack) == 1):
            self.element(frame)
        else:
            self.run(frame)

    def run(self, frame: _Frame) -> None:
        """Inside a container nothing is asked from: consume runs of shallow values in C."""
        data, pos = self.data, self.pos
        if frame.first:
            frame.first = False
            empty = _EMPTY.match(data, pos, min(self.end, pos + WINDOW))
            if empty is not None:
                self.close(empty.end() - 1)
                return
        is_object = frame.closer == 0x7D
        match = (_OBJECT_RUN if is_object else _ARRAY_RUN).match(data, pos, min(self.end, pos + WINDOW))
        assert match is not None  # every part of the pattern may be empty
        if match["close"] is not None:
            self.close(match.end() - 1)
        elif match["open"] is not None:
            self.open(match.end() - 1, None)
        elif match.end() > pos:
            self.pos = match.end()  # stopped after a comma: the next run starts there
        else:  # a token longer than a window, or not JSON: one token at a time
            if is_object:
                self.pos = self.colon(self.string(self.space(pos)))
            self.value(None, None)

    def element(self, frame: _Frame) -> None:
        """An element of an array that is counted or listed."""
        if frame.first:
            frame.first = False
            empty = _EMPTY.match(self.data, self.pos, min(self.end, self.pos + WINDOW))
            if empty is not None:
                self.close(empty.end() - 1)
                return
        if frame.count is not None:
            frame.count += 1
        begin = self.space(self.pos)
        if self.found.elements is not None and len(self.stack) == 1:
            if len(self.found.elements) >= MAX_ELEMENTS:
                raise NotJson(f"more than {MAX_ELEMENTS} elements")
            self.found.elements.append((begin, begin))  # its end is known once it is read
        self.value(None, None)

    def member(self, frame: _Frame) -> None:
        """A member of an object along a path asked for: members of other names go by in runs."""
        assert frame.names is not None and frame.path is not None
        data = self.data
        if frame.first:
            frame.first = False
            empty = _EMPTY.match(data, self.pos, min(self.end, self.pos + WINDOW))
            if empty is not None:
                self.close(empty.end() - 1)
                return
        passed = _run_past(frame.names).match(data, self.pos, min(self.end, self.pos + WINDOW))
        assert passed is not None
        self.pos = passed.end()
        key_match = _KEY.match(data, self.pos, min(self.end, self.pos + WINDOW))
        if key_match is not None:
            key_span = key_match.span("key")
            self.pos = key_match.end()
        else:
            begin = self.space(self.pos)
            key_span = (begin, self.string(begin))
            self.pos = self.colon(key_span[1])
        key = self.key(key_span)
        if key in frame.names:
            path = (*frame.path, key)
            self.forget(path)
            self.value(path, self.names_under(path))
        else:
            self.value(None, None)

    def key(self, span: Span) -> str | None:
        start, end = span
        if end - start > MAX_KEY_BYTES:
            return None
        raw = bytes(self.data[start:end])
        key: str = json.loads(raw) if b"\\" in raw else raw[1:-1].decode()
        return key

    def value(self, path: Path | None, names: frozenset[str] | None) -> None:
        """One value at `self.pos` (after spaces); then the comma or the close after it."""
        data, end = self.data, self.end
        tracked = path is not None and (path in self.wanted or path in self.counted or names is not None)
        if not tracked:
            shallow = _SHALLOW_VALUE.match(data, self.pos, min(end, self.pos + WINDOW))
            if shallow is not None:
                self.ended(shallow.end())
                return
        begin = self.space(self.pos)
        if begin < end and data[begin] in _CLOSERS:
            self.open(begin, path)
            return
        stop = self.scalar(begin)
        if path is not None and path in self.wanted:
            self.found.spans[path] = (begin, stop)
        self.ended(stop)

    def ended(self, stop: int) -> None:
        """A value ended at `stop`: a comma, or the close of its container, follows."""
        if self.found.elements is not None and len(self.stack) == 1:
            begin, _ = self.found.elements[-1]
            self.found.elements[-1] = (begin, stop)
        self.pos = stop
        self.stack[-1].after = True

    def comma_or_close(self, frame: _Frame) -> None:
        frame.after = False
        stop = self.pos
        after = _AFTER.match(self.data, stop, min(self.end, stop + WINDOW))
        if after is None:  # spaces longer than a window, or not JSON
            stop = self.space(stop)
            after = _AFTER.match(self.data, stop, min(self.end, stop + 1))
            if after is None:
                raise NotJson(f"expected a comma or a close at byte {stop}")
        if after["close"] is not None:
            self.close(after.end() - 1)
        else:
            self.pos = after.end()

    def open(self, at: int, path: Path | None) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise NotJson(f"nested deeper than {MAX_DEPTH} levels")
        opener = self.data[at]
        names = self.names_under(path) if path is not None and opener == 0x7B else None
        frame = _Frame(opener, at, path, names)
        if path is not None:
            frame.record = path in self.wanted
            if path in self.counted and opener == 0x5B:
                frame.count = 0
        self.stack.append(frame)
        self.pos = at + 1

    def close(self, at: int) -> None:
        frame = self.stack.pop()
        if self.data[at] != frame.closer:
            raise NotJson(f"mismatched close at byte {at}")
        if frame.path is not None:
            if frame.record:
                self.found.spans[frame.path] = (frame.start, at + 1)
            if frame.count is not None:
                self.found.counts[frame.path] = frame.count
        if self.stack:
            self.ended(at + 1)
        else:
            self.pos = at + 1

    # --- tokens, window by window -------------------------------------------------------------------------------

    def space(self, pos: int) -> int:
        while True:
            stop = min(self.end, pos + WINDOW)
            pos = _SPACE.match(self.data, pos, stop).end()  # type: ignore[union-attr]  # it matches the empty text
            if pos < stop or stop == self.end:
                return pos

    def colon(self, pos: int) -> int:
        pos = self.space(pos)
        if pos >= self.end or self.data[pos] != 0x3A:
            raise NotJson(f"expected a colon at byte {pos}")
        return self.space(pos + 1)

    def string(self, pos: int) -> int:
        """Where the string starting at `pos` ends (after its closing quote)."""
        data, end = self.data, self.end
        if pos >= end or data[pos] != 0x22:
            raise NotJson(f"expected a string at byte {pos}")
        at = pos + 1
        while True:
            stop = min(end, at + WINDOW)
            at = _STRING_PART.match(data, at, stop).end()  # type: ignore[union-attr]  # it matches the empty text
            if at < end and data[at] == 0x22:
                return at + 1
            if stop == end or at < stop - 6:  # the data ended, or a control character or a bad escape
                raise NotJson(f"bad string at byte {at}")

    def scalar(self, pos: int) -> int:
        data, end = self.data, self.end
        if pos >= end:
            raise NotJson("the text ends where a value should be")
        first = data[pos]
        if first == 0x22:
            return self.string(pos)
        for literal in (b"true", b"false", b"null"):
            if data.startswith(literal, pos):
                return pos + len(literal)
        return self.number(pos)

    def number(self, pos: int) -> int:
        data, end = self.data, self.end
        at = pos + 1 if data[pos] == 0x2D else pos  # -
        if at < end and data[at] == 0x30:  # 0
            at += 1
        else:
            at = self.digits(at)
        if at < end and data[at] == 0x2E:  # .
            at = self.digits(at + 1)
        if at < end and data[at] in b"eE":
            at += 1
            if at < end and data[at] in b"+-":
                at += 1
            at = self.digits(at)
        return at

    def digits(self, pos: int) -> int:
        """The end of one or more digits at `pos`."""
        at = pos
        while True:
            stop = min(self.end, at + WINDOW)
            at = _DIGITS.match(self.data, at, stop).end()  # type: ignore[union-attr]  # it matches the empty text
            if at < stop or stop == self.end:
                break
        if at == pos:
            raise NotJson(f"expected a digit at byte {pos}")
        return at


def prepare(wanted: Iterable[Path]) -> None:
    """Compile now what scanning for `wanted` needs (a pattern is large: compiled on first use, it would hold
    up the event loop once)."""
    paths = frozenset(wanted)
    for prefix in {path[:i] for path in paths for i in range(len(path))}:
        _run_past(frozenset(p[len(prefix)] for p in paths if len(p) > len(prefix) and p[: len(prefix)] == prefix))


def steps(
    data: Data,
    wanted: Iterable[Path] = (),
    *,
    counted: Iterable[Path] = (),
    elements: bool = False,
    span: Span | None = None,
) -> Generator[None, None, Scanned]:
    """`scan` in steps: each `next` does a bounded amount of work; the generator returns what `scan` does."""
    start, end = span if span is not None else (0, len(data))
    return _Scanner(data, frozenset(wanted), frozenset(counted), elements, start, end).steps()


def scan(
    data: Data,
    wanted: Iterable[Path] = (),
    *,
    counted: Iterable[Path] = (),
    elements: bool = False,
    span: Span | None = None,
) -> Scanned:
    """The object or array that `data` (or `data[span]`) holds, with the spans of the `wanted` members, the
    element counts of the `counted` arrays and, with `elements`, the top-level array's elements. NotJson when
    it is not one JSON object or array."""
    return finish(steps(data, wanted, counted=counted, elements=elements, span=span))


def finish(scanning: Generator[None, None, Scanned]) -> Scanned:
    """Run a scan's steps to the end."""
    while True:
        try:
            next(scanning)
        except StopIteration as done:
            found: Scanned = done.value
            return found


def decode(data: Data, span: Span, limit: int) -> Any:
    """The JSON value at `span` (one the scan found, so valid), or None when it is longer than `limit` bytes."""
    start, end = span
    if end - start > limit:
        return None
    return json.loads(bytes(data[start:end]))
