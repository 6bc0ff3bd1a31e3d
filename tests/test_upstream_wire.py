"""The bridge's pure pieces: the SSE parser, the routing headers, the relay's errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from context_harness.primitives.relay_errors import relay_error
from context_harness.upstream.limits import REINIT_PER_MINUTE, ReinitBudget, TooLarge
from context_harness.upstream.messages import Message, lookup_id, routing_headers
from context_harness.upstream.sse import Event, SseParser

STREAM = (
    b": keep-alive\r\n\r\n"
    b"event: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n"
    b'id: 7\ndata: {"a":\ndata: 1}\n\n'
    b"retry: 3000\rdata: x\r\r"
    b"data\n\n"
)
EXPECTED = [
    Event(data=b"/messages/?session_id=1", event="endpoint"),
    Event(data=b'{"a":\n1}', id="7"),
    Event(data=b"x", id="7", retry_ms=3000),
    Event(data=b"", id="7"),
]


def test_events_are_parsed_with_every_line_ending() -> None:
    parser = SseParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.last_event_id == "7"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_events_do_not_depend_on_how_the_stream_is_cut(cuts: list[int]) -> None:
    parser = SseParser()
    events: list[Event] = []
    start = 0
    for cut in sorted(cuts) + [len(STREAM)]:
        events += parser.feed(STREAM[start:cut])
        start = cut
    assert events == EXPECTED


def test_an_unfinished_event_is_held_until_its_blank_line() -> None:
    parser = SseParser()
    assert parser.feed(b"data: half") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [Event(data=b"half")]


def test_a_line_or_an_event_past_the_limit_is_refused_as_it_grows() -> None:
    endless_line = SseParser(limit=1000)
    endless_line.feed(b"data: " + b"x" * 900)
    with pytest.raises(TooLarge):
        endless_line.feed(b"x" * 200)  # no line ending yet: nothing more is kept
    endless_event = SseParser(limit=1000)
    with pytest.raises(TooLarge):
        for _ in range(20):
            endless_event.feed(b"data: " + b"x" * 99 + b"\n")  # lines, but never the blank one
    just_fits = SseParser(limit=1000)
    assert just_fits.feed(b"data: " + b"x" * 990 + b"\n\n") == [Event(data=b"x" * 990)]


def test_a_long_line_cut_in_many_chunks_is_parsed_whole() -> None:
    parser = SseParser()
    events = parser.feed(b"data: ")
    for _ in range(1000):
        events += parser.feed(b"y" * 1000)
    events += parser.feed(b"\r")
    events += parser.feed(b"\n\r\n")
    assert events == [Event(data=b"y" * 1_000_000)]


def test_only_string_and_integer_ids_are_looked_up() -> None:
    assert [lookup_id(v) for v in ("a", 7, [1], {"a": 1}, True, None, 1.5)] == ["a", 7, None, None, None, None, None]


def test_reinitializations_back_off_and_stop_for_the_rest_of_the_minute() -> None:
    now = [1000.0]
    budget = ReinitBudget(clock=lambda: now[0])
    delays = []
    for _ in range(REINIT_PER_MINUTE):
        delay = budget.delay()
        assert delay is not None
        delays.append(delay)
        now[0] += delay
        budget.spend()
    assert delays[:4] == [0.0, 0.5, 1.0, 2.0] and max(delays) <= 30.0
    assert budget.delay() is None  # the minute's share is spent
    now[0] += 60
    assert budget.delay() is not None


async def test_handshake_sessions_carry_the_negotiated_version() -> None:
    request = await Message.of({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}})
    assert routing_headers(request, "2025-11-25") == {"MCP-Protocol-Version": "2025-11-25"}
    assert routing_headers(request, None) == {}


async def test_per_request_versions_mirror_method_and_name_in_headers() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": meta}}
    assert routing_headers(await Message.of(request), "2025-11-25") == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    odd = {**request, "params": {"name": "é\n", "_meta": meta}}
    assert "Mcp-Name" not in routing_headers(await Message.of(odd), None)  # not a safe header value: left out


def test_relay_errors_say_what_to_do() -> None:
    reply = relay_error(4, "srv needs a new login", "INVALID_GRANT", hint="run `chctl auth srv`")
    assert reply["id"] == 4
    assert reply["error"]["message"] == "srv needs a new login (run `chctl auth srv`)"
    assert reply["error"]["data"] == {"code": "INVALID_GRANT", "hint": "run `chctl auth srv`"}
