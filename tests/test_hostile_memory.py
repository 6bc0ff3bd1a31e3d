"""Messages just under the relay's 64 MiB limit, from a hostile server and from the client, against the real
daemon and `chctl bridge`: each costs the daemon about its own size, once (the goal: at most 64 MiB over idle;
parsed and serialised again, a 60 MiB page cost 700 MiB), and arrives byte for byte.

The daemon's peak resident memory (VmHWM) is reset at idle before each attack and read after it. Our own
aiohttp server on 127.0.0.1 plays the server, in this process: its memory is not the daemon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.oauth_fakes import serve
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv
from tests.support.memory import MIB, reset_peak, resident
from tests.support.pages import tools_in, tools_page
from tests.test_hostile_upstream import RawBridge, add_bridged

UNDER_THE_LIMIT = 60 * MIB  # a message of 60 MiB, just under the 64 MiB limit
# The goal holds with room to spare: the message itself, plus the slices on their way in and out.
MEMORY_BOUND = 64 * MIB
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


def page_pieces(request_id: Any, cursor: str | None = None) -> list[bytes]:
    return tools_page(UNDER_THE_LIMIT, request_id, cursor)


class PageServer:
    """A Streamable HTTP server that answers every request after `initialize` with `reply(message)`."""

    def __init__(self, framing: str) -> None:
        self.framing = framing  # json, sse-event (a data line per piece), sse-line (one data line)
        self.received: list[bytes] = []
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PageServer]:
        app = web.Application(client_max_size=2 * UNDER_THE_LIMIT)
        app.router.add_post("/mcp", self.post)
        app.router.add_get("/mcp", self.get)
        async with serve(app) as base:
            self.url = base + "/mcp"
            yield self

    async def get(self, request: web.Request) -> web.Response:
        return web.Response(status=405)  # no stream of its own

    async def post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if len(body) < MIB:
            message = json.loads(body)
        else:  # the client's own large line: kept as it came, answered small
            self.received.append(body)
            return web.json_response({"jsonrpc": "2.0", "id": CALL["id"], "result": {"content": []}})
        if message.get("method") == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "h"}}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return web.json_response(reply, headers={"Mcp-Session-Id": "s-1"})
        if "id" not in message:
            return web.Response(status=202)
        first_page = not (message.get("params") or {}).get("cursor")
        pieces = page_pieces(message["id"], "page-2" if message.get("method") == "tools/list" and first_page else None)
        if self.framing == "json":
            return web.Response(body=b"".join(pieces), content_type="application/json")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        if self.framing == "sse-line":
            await stream.write(b"data: " + b"".join(pieces) + b"\n\n")
        else:
            await stream.write(b"".join(b"data: " + piece + b"\n" for piece in pieces) + b"\n")
        return stream


def pid_of(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


async def relayed_once(daemon: DaemonProcess, user_env: UserEnv, framing: str) -> None:
    async with PageServer(framing).running() as server:
        add_bridged(user_env, "pages", server.url)
        async with RawBridge(user_env, "pages", line_limit=2 * UNDER_THE_LIMIT) as bridge:
            await bridge.start_session()
            assert bridge.proc is not None and bridge.proc.stdin is not None and bridge.proc.stdout is not None
            await asyncio.sleep(0.5)  # the session's own traffic settles
            idle = reset_peak(pid_of(daemon))
            await bridge.send(CALL)
            line = await asyncio.wait_for(bridge.proc.stdout.readline(), 300)
            grew = resident(pid_of(daemon))[1] - idle
    pieces = page_pieces(CALL["id"])
    # The server's bytes, as they came; an SSE event's lines were joined by line feeds, now spaces.
    assert line == (b" " if framing == "sse-event" else b"").join(pieces) + b"\n"
    assert grew <= MEMORY_BOUND, f"+{grew / MIB:.1f} MiB"


async def test_a_json_reply_just_under_the_limit_costs_its_size_once_and_arrives_as_sent(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    await relayed_once(daemon, user_env, "json")


async def test_an_sse_event_of_many_lines_just_under_the_limit_costs_its_size_once(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    await relayed_once(daemon, user_env, "sse-event")


async def test_an_sse_line_just_under_the_limit_costs_its_size_once(daemon: DaemonProcess, user_env: UserEnv) -> None:
    await relayed_once(daemon, user_env, "sse-line")


async def test_a_client_line_just_under_the_limit_costs_its_size_once_and_reaches_the_server_as_sent(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    head = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{"page":'
    line = head + b"".join(page_pieces("inner")) + b"}}}"
    async with PageServer("json").running() as server:
        add_bridged(user_env, "pages", server.url)
        async with RawBridge(user_env, "pages") as bridge:
            await bridge.start_session()
            assert bridge.proc is not None and bridge.proc.stdin is not None
            await asyncio.sleep(0.5)
            idle = reset_peak(pid_of(daemon))
            bridge.proc.stdin.write(line + b"\n")
            await bridge.proc.stdin.drain()
            reply = await bridge.reply(2, deadline_s=300)
            grew = resident(pid_of(daemon))[1] - idle
    assert reply["result"] == {"content": []}
    assert server.received == [line]
    assert grew <= MEMORY_BOUND, f"+{grew / MIB:.1f} MiB"


async def test_check_counts_tools_on_pages_just_under_the_limit_without_keeping_them(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async with PageServer("json").running() as server:
        add_bridged(user_env, "pages", server.url)
        idle = reset_peak(pid_of(daemon))
        checked = await asyncio.to_thread(
            lambda: chctl(user_env, "check", "pages", "--json", "--timeout", "280", timeout=300)
        )
        grew = resident(pid_of(daemon))[1] - idle
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (probe,) = json.loads(checked.stdout)
    assert probe["tools"] == 2 * tools_in(page_pieces(1))  # two pages
    assert grew <= MEMORY_BOUND, f"+{grew / MIB:.1f} MiB"
