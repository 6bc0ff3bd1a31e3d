"""The bridge's pure pieces: the SSE parser, the routing headers, the relay's errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from context_harness.upstream.messages import error_response, routing_headers
from context_harness.upstream.sse import Event, SseParser

STREAM = (
    b": keep-alive\r\n\r\n"
    b"event: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n"
    b'id: 7\ndata: {"a":\ndata: 1}\n\n'
    b"retry: 3000\rdata: x\r\r"
    b"data\n\n"
)
EXPECTED = [
    Event(data="/messages/?session_id=1", event="endpoint"),
    Event(data='{"a":\n1}', id="7"),
    Event(data="x", id="7", retry_ms=3000),
    Event(data="", id="7"),
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
    assert parser.feed(b"\n") == [Event(data="half")]


def test_handshake_sessions_carry_the_negotiated_version() -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    assert routing_headers(request, "2025-11-25") == {"MCP-Protocol-Version": "2025-11-25"}
    assert routing_headers(request, None) == {}


def test_per_request_versions_mirror_method_and_name_in_headers() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": meta}}
    assert routing_headers(request, "2025-11-25") == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    odd = {**request, "params": {"name": "é\n", "_meta": meta}}
    assert "Mcp-Name" not in routing_headers(odd, None)  # not a safe header value: left out


def test_relay_errors_say_what_to_do() -> None:
    reply = error_response(4, "srv needs a new login", "INVALID_GRANT", hint="run `chctl auth srv`")
    assert reply["id"] == 4
    assert reply["error"]["message"] == "srv needs a new login (run `chctl auth srv`)"
    assert reply["error"]["data"] == {"code": "INVALID_GRANT", "hint": "run `chctl auth srv`"}
