"""The JSON scanner against `json.loads`, the reference: on every text it reads, it finds what json.loads
finds at the paths asked for (repeated keys, escaped keys, nested look-alikes, whitespace and windows cut
anywhere included), and it refuses exactly the texts json.loads refuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_harness.primitives import json_scan
from context_harness.primitives.json_scan import NotJson, Path, decode, scan
from context_harness.upstream import messages
from context_harness.upstream.messages import scan_async

NAMES = ["id", "method", "result", "error", "params", "name", "tools", "_meta", "a", "i", "ID", "id "]
WANTED: list[Path] = [
    ("id",),
    ("method",),
    ("result",),
    ("error",),
    ("params",),
    ("params", "name"),
    ("params", "_meta", "id"),
    ("result", "tools"),
    ("result", "name"),
]
COUNTED: list[Path] = [("result", "tools"), ("params", "_meta")]


def reference(text: bytes) -> Any:
    """json.loads as the relay's peers read JSON: UTF-8, no NaN or Infinity (RFC 8259)."""

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text.decode("utf-8"), parse_constant=no_constants)


def at(value: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise KeyError(path)
        value = value[key]
    return value


def agrees(text: bytes) -> None:
    """The scan and json.loads accept the same text, and find the same values."""
    try:
        expected = reference(text)
        readable = isinstance(expected, dict | list)
    except (ValueError, RecursionError):
        readable = False
    if not readable:
        with pytest.raises(NotJson):
            scan(text, WANTED, counted=COUNTED)
        return
    found = scan(text, WANTED, counted=COUNTED)
    assert found.kind == ("object" if isinstance(expected, dict) else "array")
    for path in WANTED:
        try:
            value = at(expected, path)
        except KeyError:
            assert path not in found.spans, path
            continue
        assert decode(text, found.spans[path], len(text)) == value, path
    for path in COUNTED:
        try:
            value = at(expected, path)
        except KeyError:
            value = None
        if isinstance(value, list):
            assert found.counts[path] == len(value), path
        else:
            assert path not in found.counts, path


# --- JSON texts, written token by token so that keys repeat, escape and space out as a hostile peer may -----

spaces = st.text(alphabet=" \t\r\n", max_size=3)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(['"id"', "id", '\\"', "\\", "\u2028", "\ud800", "é", "😀", "{", "]", ":"]),
)


def values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalars
    inner = values(depth - 1)
    objects = st.lists(st.tuples(st.sampled_from(NAMES), inner), max_size=5).map(Pairs)
    return st.one_of(scalars, st.lists(inner, max_size=5), objects)


class Pairs(list[tuple[str, Any]]):
    """An object as its members in order, repeated keys allowed."""


@st.composite
def texts(draw: st.DrawFn, value: Any = None) -> bytes:
    if value is None:
        value = draw(st.one_of(st.lists(values(3), max_size=4), values(4).filter(lambda v: isinstance(v, Pairs))))

    def write(v: Any) -> str:
        gap = draw(spaces)
        if isinstance(v, Pairs):
            members = [f"{write_key(k)}{draw(spaces)}:{draw(spaces)}{write(x)}" for k, x in v]
            return gap + "{" + f",{draw(spaces)}".join(members) + draw(spaces) + "}" + gap
        if isinstance(v, list):
            return gap + "[" + f",{draw(spaces)}".join(write(x) for x in v) + draw(spaces) + "]" + gap
        return gap + json.dumps(v, ensure_ascii=draw(st.booleans())) + gap

    def write_key(key: str) -> str:
        if draw(st.booleans()):  # some characters as \u escapes: "\u0069d" is "id"
            return '"' + "".join(f"\\u{ord(c):04x}" if draw(st.booleans()) else c for c in key) + '"'
        return json.dumps(key)

    return write(value).encode("utf-8", errors="surrogatepass")


@settings(max_examples=250, deadline=None)
@given(texts())
def test_the_scan_finds_what_json_loads_finds(text: bytes) -> None:
    agrees(text)


@settings(max_examples=250, deadline=None)
@given(texts(), st.data())
def test_a_damaged_text_is_refused_exactly_when_json_loads_refuses_it(text: bytes, data: st.DataObject) -> None:
    damaged = bytearray(text)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(damaged)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(b'{}[]",:\\ 0-.eEtfnu\x00\x1f\xc3\xa9\xff'))
        if kind == "insert":
            damaged[where:where] = bytes([byte])
        elif where < len(damaged):
            damaged[where : where + 1] = b"" if kind == "delete" else bytes([byte])
    agrees(bytes(damaged))


@settings(max_examples=120, deadline=None)
@given(texts(), st.integers(16, 64))
def test_windows_cut_anywhere_change_nothing(text: bytes, window: int) -> None:
    """Every regular expression sees WINDOW bytes at most: tokens longer than a window read the same."""
    padded = text.replace(b'"', b'"' + b"x" * 40, 3).replace(b":", b":" + b" " * 50, 2)
    with mock.patch.object(json_scan, "WINDOW", window):
        agrees(text)
        agrees(padded)


def test_long_tokens_across_windows() -> None:
    with mock.patch.object(json_scan, "WINDOW", 16):
        for text in (
            b'{"id": "' + b"\\u00e9\\n" * 30 + b'", "result": 12345678901234567890123456789.5e+100}',
            b'{"result": [' + b"1, " * 40 + b'{"a": [[[]]]}], "id": ' + b"7" * 50 + b"}",
            b'{"' + b"k" * 100 + b'": 1,' + b" " * 100 + b'"id": 2}',
        ):
            agrees(text)


def test_a_top_level_array_lists_its_elements_up_to_a_bound() -> None:
    text = b' [ {"id": 1} ,2, [3,[4]] ] '
    assert [text[a:b] for a, b in scan(text, elements=True).elements or []] == [b'{"id": 1}', b"2", b"[3,[4]]"]
    with pytest.raises(NotJson):
        scan(b"[" + b"0," * json_scan.MAX_ELEMENTS + b"0]", elements=True)


def test_nesting_past_the_bound_is_refused_without_recursion() -> None:
    scan(b"[" * json_scan.MAX_DEPTH + b"]" * json_scan.MAX_DEPTH)
    deeper = json_scan.MAX_DEPTH + 3  # the two innermost levels are read whole, without a frame
    with pytest.raises(NotJson):
        scan(b"[" * deeper + b"]" * deeper)


def test_a_scan_on_the_event_loop_gives_way_between_steps() -> None:
    text = b'{"result": [' + b",".join([b'{"a":[[["x"]]]}'] * 20000) + b'], "id": 9}'

    async def scan_while_counting_turns() -> int:
        turns = 0
        stop = asyncio.Event()

        async def other() -> None:
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        found = await scan_async(json_scan.steps(text, [("id",)]))
        stop.set()
        await task
        assert decode(text, found.spans[("id",)], 10) == 9
        return turns

    assert asyncio.run(scan_while_counting_turns()) > 10


@settings(max_examples=150, deadline=None)
@given(texts())
def test_a_short_message_decoded_whole_routes_as_a_scanned_one(text: bytes) -> None:
    """Short messages take json.loads (ten times faster); what the relay reads of them is the scan's answer."""

    async def read(raw: bytes) -> tuple[dict[Path, Any], bool] | None:
        try:
            message = await messages.Message.read(raw)
        except NotJson:
            return None
        return message.members, message.is_batch

    async def both() -> None:
        fast = await read(text)
        with mock.patch.object(messages, "SMALL_MESSAGE_BYTES", 0):
            assert await read(text) == fast

    asyncio.run(both())
