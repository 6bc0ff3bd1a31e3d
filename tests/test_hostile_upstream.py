"""Attacks from a hostile or broken MCP server on the bridge, against the real daemon and `chctl bridge`.

Our own aiohttp servers on 127.0.0.1 play the server; the agent is `chctl bridge NAME` spoken to line by line.
Whatever the server does, it costs the daemon a bounded amount, never the other servers' share, and the
client gets an answer that says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from context_harness.services.mcp_service import bridge_command
from tests.oauth_fakes import FakeWorld, running_world, serve
from tests.peers.mcp_servers import McpApiKeyServerFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.login import call, login

SERVER_INFO = {"name": "hostile", "version": "0"}
REPLY_DEADLINE_S = 60  # an answer that does not come fails the test instead of hanging it
OVER_THE_LIMIT = 80 * 1024 * 1024  # more than one relay message (64 MiB)
KEY = "hostile-test-key-not-real"

OnCall = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def initialize(request_id: Any = 1) -> dict[str, Any]:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


def tool_call(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "x", "arguments": {}}}


def text_result(request_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}}


class HostileMcp:
    """A Streamable HTTP server that initializes like any other and answers `tools/call` with `on_call`."""

    def __init__(self, on_call: OnCall | None = None, get_status: int = 405) -> None:
        self.on_call = on_call
        self.get_status = get_status
        self.initializes = 0
        self.calls = 0
        self.open_streams = 0
        self.notifications: list[str] = []
        self.seen_headers: list[dict[str, str]] = []
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostileMcp]:
        app = web.Application()
        app.router.add_post("/mcp", self.post)
        app.router.add_get("/mcp", self.get)
        async with serve(app) as base:
            self.url = base + "/mcp"
            yield self

    async def post(self, request: web.Request) -> web.StreamResponse:
        self.seen_headers.append(dict(request.headers))
        message = await request.json()
        if message.get("method") == "initialize":
            self.initializes += 1
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return web.json_response(reply, headers={"Mcp-Session-Id": f"s-{self.initializes}"})
        if "id" not in message:
            self.notifications.append(message.get("method"))
            return web.Response(status=202)
        if message.get("method") == "tools/call" and self.on_call is not None:
            self.calls += 1
            return await self.on_call(request, message)
        return web.json_response(text_result(message["id"], "honest"))

    async def get(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=self.get_status)

    async def endless_stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        """An SSE stream that never answers: keep-alive comments until the client goes away."""
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        self.open_streams += 1
        try:
            while True:
                await stream.write(b": still working\n\n")
                await asyncio.sleep(0.2)
        except (ConnectionError, RuntimeError):
            return stream
        finally:
            self.open_streams -= 1


class RawBridge:
    """`chctl bridge NAME`, run as the agent runs it (the config entry's command), spoken to line by line."""

    def __init__(self, user_env: UserEnv, name: str, line_limit: int = 1 << 20) -> None:
        self.user_env = user_env
        self.command = bridge_command(name)
        self.line_limit = line_limit
        self.proc: asyncio.subprocess.Process | None = None
        self.replies: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> RawBridge:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**self.user_env.vars(), "CH_NO_AUTOSTART": "1"},
            limit=self.line_limit,
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def reply(self, request_id: Any, deadline_s: float = REPLY_DEADLINE_S) -> dict[str, Any]:
        """The response to `request_id` (what else arrives meanwhile is kept by id)."""
        assert self.proc is not None and self.proc.stdout is not None
        key = json.dumps(request_id)
        async with asyncio.timeout(deadline_s):
            while key not in self.replies:
                line = await self.proc.stdout.readline()
                assert line, "chctl bridge closed its stdout"
                message = json.loads(line)
                if "method" not in message and "id" in message:
                    self.replies[json.dumps(message["id"])] = message
        return self.replies.pop(key)

    async def ask(self, message: dict[str, Any], deadline_s: float = REPLY_DEADLINE_S) -> dict[str, Any]:
        await self.send(message)
        return await self.reply(message["id"], deadline_s)

    async def start_session(self) -> None:
        assert "result" in await self.ask(initialize()), "the server should initialize"
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def add_bridged(user_env: UserEnv, name: str, url: str, *args: str) -> None:
    config = user_env.project / "opencode.json"
    if not config.exists():
        assert chctl(user_env, "init").returncode == 0
    added = chctl(user_env, "add", name, "--bridge", "--url", url, *args)
    assert added.returncode == 0, added.stderr


def error_text(reply: dict[str, Any]) -> str:
    assert "error" in reply, reply
    return str(reply["error"]["message"])


async def poll(predicate: Callable[[], bool], what: str, deadline_s: float = 30) -> None:
    """Wait for `predicate`, looking every 50 ms, for `deadline_s` at most."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.05)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


# --- redirects ----------------------------------------------------------------------------------------------


async def test_a_redirect_is_refused_naming_its_location_and_the_key_goes_nowhere_else(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    elsewhere = HostileMcp()

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": elsewhere.url})

    app = web.Application()
    app.router.add_post("/mcp", moved)
    async with elsewhere.running(), serve(app) as base:
        add_bridged(user_env, "moved", base + "/mcp", "--key-header", "CONTEXT7_API_KEY", "-k", KEY)
        async with RawBridge(user_env, "moved") as bridge:
            reply = await bridge.ask(initialize())
        assert "307" in error_text(reply) and elsewhere.url.removeprefix("http://") in error_text(reply)
        assert elsewhere.seen_headers == []  # nothing, least of all the key, went to the other port
    assert KEY not in daemon.log()


# --- sizes --------------------------------------------------------------------------------------------------


async def huge_json_body(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
    """A reply with no length that goes on past the limit."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b"[" + b"0," * (512 * 1024)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(OVER_THE_LIMIT // len(chunk) + 1):
            await response.write(chunk)
    return response


async def huge_sse_event(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
    """An event whose data lines go on past the limit."""
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    lines = b"data: " + b"x" * 1000 + b"\n"
    chunk = lines * 1024
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(OVER_THE_LIMIT // len(chunk) + 1):
            await stream.write(chunk)
    return stream


async def test_a_body_or_event_past_the_message_limit_is_refused_and_the_daemon_keeps_serving(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    for name, on_call in (("body", huge_json_body), ("event", huge_sse_event)):
        async with HostileMcp(on_call).running() as server:
            add_bridged(user_env, name, server.url)
            async with RawBridge(user_env, name) as bridge:
                await bridge.start_session()
                reply = await bridge.ask(tool_call(2))
                assert "larger than 64 MiB" in error_text(reply), name
                # The session goes on: the next request is carried as usual.
                server.on_call = None
                assert "result" in await bridge.ask(tool_call(3))
        assert (await call(user_env, "daemon.status"))["result"]["pid"] > 0


# --- one server cannot starve the others ---------------------------------------------------------------------


async def test_a_cancelled_request_and_a_closed_bridge_close_their_upstream_streams(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    server = HostileMcp()
    server.on_call = server.endless_stream
    async with server.running():
        add_bridged(user_env, "slow", server.url)
        async with RawBridge(user_env, "slow") as bridge:
            await bridge.start_session()
            for request_id in (2, "three"):
                await bridge.send(tool_call(request_id))
            await poll(lambda: server.open_streams == 2, "both calls are streaming")
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}}
            await bridge.send(cancel)
            await poll(lambda: server.open_streams == 1, "the cancelled call's stream is closed")
            await poll(lambda: "notifications/cancelled" in server.notifications, "the server is told")
        await poll(lambda: server.open_streams == 0, "the closed bridge's stream is closed")


async def test_never_ending_streams_from_one_server_starve_neither_refreshes_nor_other_servers(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    honest = mcp_api_key_server()
    server = HostileMcp()
    server.on_call = server.endless_stream
    async with server.running(), running_world(FakeWorld()) as world:
        assert "result" in await login(user_env, world)
        add_bridged(user_env, "endless", server.url)
        add_bridged(user_env, "honest", honest.url, "--key-header", honest.header, "-k", honest.key)
        async with RawBridge(user_env, "endless") as hog, RawBridge(user_env, "honest") as other:
            await hog.start_session()
            for request_id in range(2, 132):  # more than any shared pool holds
                await hog.send(tool_call(request_id))
            await poll(lambda: server.open_streams >= 100, "the streams are open")
            refreshed = await call(user_env, "token.refresh", name="srv")
            assert "result" in refreshed, refreshed
            await other.start_session()
            reply = await other.ask(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hi"}},
                },
                deadline_s=30,
            )
            assert reply["result"]["content"][0]["text"] == "hi"


# --- renewals and re-initializations ---------------------------------------------------------------------------


async def test_a_server_refusing_every_token_gets_one_refresh_per_spacing(user_env: UserEnv) -> None:
    process = DaemonProcess(user_env, extra_env={"CH_MIN_REFRESH_SPACING_S": "600"}).start()
    try:
        async with running_world(FakeWorld()) as world:  # its /mcp answers every request with 401
            assert "result" in await login(user_env, world)
            add_bridged(user_env, "srv", world.server_url)
            async with RawBridge(user_env, "srv") as bridge:
                for request_id in range(1, 31):
                    assert "error" in await bridge.ask(initialize(request_id))
            refreshes = [form for form in world.token_forms if form.get("grant_type") == "refresh_token"]
            assert len(refreshes) == 1
    finally:
        process.stop()


async def test_a_session_lost_again_and_again_is_reinitialized_with_backoff(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async with HostileMcp(get_status=404).running() as server:  # "this session is gone", on every GET
        add_bridged(user_env, "forgetful", server.url)
        async with RawBridge(user_env, "forgetful") as bridge:
            await bridge.start_session()
            await poll(lambda: server.initializes >= 3, "the session is initialized again")
            seen = server.initializes
            await asyncio.sleep(3)  # an observation window: how many more in 3 s
            assert server.initializes - seen <= 4, server.initializes - seen
            assert "result" in await bridge.ask(tool_call(2))  # requests are still carried


class SessionLoser:
    """A server that forgets the session a tool call comes in: the listener's GET finds it gone first, and the
    call's 404 is sent once the listener's re-initialization has reached the server, so it arrives while the
    bridge has no session id at all. The re-initialization's answer waits for `go_on`."""

    def __init__(self) -> None:
        self.sessions = 0
        self.lost: str | None = None  # the session the first tool call came in
        self.reinitializations = 0
        self.call_arrived, self.reinit_arrived, self.lost_sent, self.go_on = (asyncio.Event() for _ in range(4))

    async def post(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if message.get("method") == "initialize":
            self.sessions += 1
            if self.call_arrived.is_set():
                self.reinitializations += 1
                self.reinit_arrived.set()
                await self.go_on.wait()
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return web.json_response(reply, headers={"Mcp-Session-Id": f"s-{self.sessions}"})
        if "id" not in message:
            return web.Response(status=202)
        session = request.headers.get("Mcp-Session-Id")
        if self.lost is None and message.get("method") == "tools/call":
            self.lost = session
            self.call_arrived.set()
            await self.reinit_arrived.wait()
        if session == self.lost:
            lost = web.Response(status=404)
            await lost.prepare(request)
            await lost.write_eof()
            self.lost_sent.set()
            return lost
        return web.json_response(text_result(message["id"], "sent again"))

    async def get(self, request: web.Request) -> web.StreamResponse:
        await self.call_arrived.wait()
        if request.headers.get("Mcp-Session-Id") == self.lost:
            return web.Response(status=404)
        return web.Response(status=405)  # the new session has no stream of its own


async def test_a_request_whose_session_is_lost_during_a_reinitialization_is_sent_again(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    server = SessionLoser()
    app = web.Application()
    app.router.add_post("/mcp", server.post)
    app.router.add_get("/mcp", server.get)
    async with serve(app) as base:
        add_bridged(user_env, "loser", base + "/mcp")
        async with RawBridge(user_env, "loser") as bridge:
            await bridge.start_session()
            await bridge.send(tool_call(2))
            await asyncio.wait_for(server.lost_sent.wait(), REPLY_DEADLINE_S)
            # A bridge that takes that 404 for an answer replies at once; one that waits for the
            # re-initialization cannot reply before it ends. Either way the answer is let through after a
            # while, and only the request sent again in the new session gets "sent again".
            early = asyncio.ensure_future(bridge.reply(2))
            await asyncio.wait([early], timeout=2)
            server.go_on.set()
            reply = await early
        assert reply.get("result", {}).get("content") == [{"type": "text", "text": "sent again"}], reply
        assert server.reinitializations == 1  # one, shared by the listener and the request


# --- ids ------------------------------------------------------------------------------------------------------


async def test_a_response_with_a_list_or_object_id_does_not_break_the_real_answer(
    daemon: DaemonProcess, user_env: UserEnv
) -> None:
    async def odd_ids_first(request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for odd in ([message["id"]], {"id": message["id"]}):
            await stream.write(f"data: {json.dumps({'jsonrpc': '2.0', 'id': odd, 'result': {}})}\n\n".encode())
        await stream.write(f"data: {json.dumps(text_result(message['id'], 'real'))}\n\n".encode())
        return stream

    async with HostileMcp(odd_ids_first).running() as server:
        add_bridged(user_env, "odd", server.url)
        async with RawBridge(user_env, "odd") as bridge:
            await bridge.start_session()
            reply = await bridge.ask(tool_call(2))
            assert reply["result"]["content"][0]["text"] == "real", reply


# --- a hung config --------------------------------------------------------------------------------------------


async def test_a_bridge_retrying_on_a_hung_config_costs_no_new_threads(user_env: UserEnv) -> None:
    other = user_env.root / "other"
    other.mkdir()
    process = DaemonProcess(user_env).start()
    try:
        assert chctl(user_env, "init", "--project", str(other)).returncode == 0
        # Its only entry is in header mode: the bridge looks for the server's URL in that config.
        added = chctl(user_env, "add", "keyed", "--url", "http://127.0.0.1:9/mcp", "-k", KEY, "--project", str(other))
        assert added.returncode == 0, added.stderr
    finally:
        process.stop()
    config = other / "opencode.json"
    bridge = RawBridge(user_env, "keyed")
    config.unlink()
    os.mkfifo(config)  # what a read on a dead NFS mount does: block
    process = DaemonProcess(user_env, extra_env={"CH_CONFIG_IO_TIMEOUT_S": "1"}).start()
    try:
        assert process.proc is not None
        pid = process.proc.pid
        # The start-up check of every bound config hangs on this one, in a thread of its own.
        wait_for(lambda: chctl(user_env, "status").returncode == 0, 30, 0.5, "status answers")
        await asyncio.sleep(2)
        before = threads_of(pid)
        async with bridge:
            began = time.monotonic()
            while time.monotonic() - began < 10:  # an agent that keeps asking
                await bridge.send(initialize(f"i-{time.monotonic_ns()}"))
                await asyncio.sleep(0.5)
            assert threads_of(pid) - before <= 2, (before, threads_of(pid))
            # The bridge backs off (1, 2, 4 ... s) instead of asking again at every message.
            opens = [e for e in process.log_events() if e.get("event") == "rpc_method_failed"]
            assert len([e for e in opens if e.get("method") == "bridge.open"]) <= 6
            assert (await call(user_env, "daemon.status"))["result"]["pid"] == pid
    finally:
        config.unlink()
        process.stop()
