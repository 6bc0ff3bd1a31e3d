"""`chctl bridge`: a running session carried through the daemon, end to end with real parts — the real
daemon and chctl, the MCP SDK's stdio client in the agent's place (and the real opencode), MCP SDK servers
(Streamable HTTP and legacy SSE, API key and OAuth), and oidc-provider issuing short-lived rotating tokens."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CreateMessageResult, ElicitResult, TextContent

from context_harness.config.jsonc import parse_jsonc
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.services.mcp_service import bridge_command
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServer, McpApiKeyServerFactory, McpOAuthServer, McpOAuthServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.opencode import debug_config, mcp_list

APP_SCRIPT = Path(__file__).resolve().parent / "peers" / "mcp_server_app.py"
SERVER_INFO = {"name": "fault", "version": "0"}
CALL_TIMEOUT_S = 60  # a call that gets no answer fails the test instead of hanging it
TOKEN_LIFETIME_S = 4  # the long session's access tokens


def add_bridged(user_env: UserEnv, name: str, *args: str) -> None:
    if not (user_env.project / "opencode.json").exists():
        assert chctl(user_env, "init").returncode == 0
    done = chctl(user_env, "add", name, "--bridge", *args)
    assert done.returncode == 0, done.stderr


def add_api_key_server(user_env: UserEnv, server: McpApiKeyServer, name: str = "keyed") -> None:
    add_bridged(user_env, name, "--url", server.url, "--key-header", server.header, "-k", server.key)


def log_in(user_env: UserEnv, name: str = "srv") -> None:
    done = chctl(user_env, "auth", name, extra_env={"BROWSER": browser_command()})
    assert done.returncode == 0, done.stderr


def entry_command(user_env: UserEnv) -> list[str]:
    """`chctl bridge` as a bridged entry runs it, without the server name."""
    return bridge_command("x")[:-1]


def entry(user_env: UserEnv, name: str) -> dict[str, Any]:
    config: dict[str, Any] = parse_jsonc((user_env.project / "opencode.json").read_text())
    found: dict[str, Any] = config["mcp"][name]
    return found


def stored_tokens(user_env: UserEnv, name: str = "srv") -> dict[str, Any]:
    tokens: dict[str, Any] = json.loads((user_env.ch_home / "tokens" / f"{name}.json").read_text())["tokens"]
    return tokens


@asynccontextmanager
async def bridged_session(
    user_env: UserEnv, name: str, stderr: Path | None = None, **callbacks: Any
) -> AsyncIterator[ClientSession]:
    """An MCP client session over the exact command opencode would run for `name`."""
    command = entry(user_env, name)["command"]
    params = StdioServerParameters(
        command=command[0], args=command[1:], env={**user_env.vars(), "CH_NO_AUTOSTART": "1"}, cwd=user_env.project
    )
    with open_for_writing(stderr or Path(os.devnull)) as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, **callbacks) as session:
                await session.initialize()
                yield session


def open_for_writing(path: Path) -> TextIO:
    return path.open("w")


def messages_of(error: BaseException) -> str:
    """Every message in `error` and the exception groups around it (task groups wrap what a client raises)."""
    if isinstance(error, BaseExceptionGroup):
        return " | ".join(messages_of(inner) for inner in error.exceptions)
    return str(error)


async def call(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await asyncio.wait_for(session.call_tool(tool, arguments), CALL_TIMEOUT_S)
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def elicit_ada(_context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "ada"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_api_key_server(log_dir: Path, key: str, port: int = 0) -> PeerProcess:
    return start_peer(
        [sys.executable, str(APP_SCRIPT), "--api-key-header", "X-API-Key", "--port", str(port)],
        log_path=log_dir / f"mcp-{time.monotonic_ns()}.log",
        env={"MCP_PEER_API_KEY": key},
    )


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


# --- the config entry -------------------------------------------------------------------------------------


def test_add_bridge_writes_a_local_entry_with_no_secret_and_switches_back(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_api_key_server(user_env, server)
    text = (user_env.project / "opencode.json").read_text()
    assert server.key not in text
    bridged = entry(user_env, "keyed")
    assert bridged["type"] == "local" and bridged["command"][1:] == ["bridge", "keyed"]
    assert os.path.isabs(bridged["command"][0]) and os.access(bridged["command"][0], os.X_OK)
    assert set(bridged) == {"type", "command"}
    assert debug_config(user_env)["mcp"]["keyed"]["command"] == bridged["command"]
    status = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]
    assert status["mode"] == "bridge"

    # Added again without --bridge, it stays bridged (as recorded); --mode header switches it, and back.
    done = chctl(user_env, "add", "keyed", "--url", server.url, "--key-header", server.header, "-k", server.key)
    assert done.returncode == 0, done.stderr
    assert entry(user_env, "keyed")["type"] == "local" and "nothing changed" in done.stdout
    done = chctl(user_env, "add", "keyed", "--mode", "header")
    assert done.returncode == 0, done.stderr
    assert "mode: bridge → header" in done.stdout
    assert entry(user_env, "keyed")["headers"] == {server.header: server.key}
    assert json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]["mode"] == "header"
    add_api_key_server(user_env, server)
    assert entry(user_env, "keyed")["type"] == "local"


def test_opencode_connects_to_bridged_oauth_and_api_key_servers(
    daemon: DaemonProcess,
    user_env: UserEnv,
    mcp_api_key_server: McpApiKeyServerFactory,
    mcp_oauth_server: McpOAuthServer,
) -> None:
    add_api_key_server(user_env, mcp_api_key_server())
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)
    log_in(user_env)
    assert mcp_list(user_env) == {"keyed": "connected", "srv": "connected"}


def test_a_bridged_server_without_a_login_fails_with_the_command_to_run(
    daemon: DaemonProcess, user_env: UserEnv, mcp_oauth_server: McpOAuthServer
) -> None:
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)

    async def scenario() -> None:
        async with bridged_session(user_env, "srv"):
            pass

    with pytest.raises(BaseException) as raised:
        asyncio.run(scenario())
    assert "needs a login" in messages_of(raised.value) and "run `chctl auth srv`" in messages_of(raised.value)


# --- a long session ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_second_tokens(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    # Rotating refresh tokens with reuse detection; a provider of this test's own (its log is read below).
    provider = oidc_provider_factory(access_token_ttl=TOKEN_LIFETIME_S, refresh_token_ttl=7200)
    return provider, mcp_oauth_server_factory(provider)


@pytest.fixture(scope="module")
def three_second_tokens(
    oidc_provider_factory: OidcProviderFactory, mcp_oauth_server_factory: McpOAuthServerFactory
) -> tuple[OidcProvider, McpOAuthServer]:
    """3 s rotating tokens: the other clients' long sessions (tests/test_clients_e2e.py) run on these."""
    provider = oidc_provider_factory(access_token_ttl=3)
    return provider, mcp_oauth_server_factory(provider)


def test_one_session_outlives_eight_token_lifetimes_with_rotating_refresh_tokens(
    daemon: DaemonProcess, user_env: UserEnv, four_second_tokens: tuple[OidcProvider, McpOAuthServer], tmp_path: Path
) -> None:
    provider, server = four_second_tokens
    add_bridged(user_env, "srv", "--url", server.url)
    log_in(user_env)
    first_refresh_token = stored_tokens(user_env)["refresh_token"]
    stderr = tmp_path / "bridge.stderr"

    async def session() -> tuple[int, set[str]]:
        calls, seen = 0, set()
        async with bridged_session(user_env, "srv", stderr=stderr) as client:
            # At least 8 lifetimes and at least 40 calls, however slow a loaded machine makes each call.
            deadline = time.monotonic() + 8 * TOKEN_LIFETIME_S + 2
            while time.monotonic() < deadline or calls < 40:
                seen.add(await call(client, "token_id"))  # fails the test on any error
                calls += 1
                await asyncio.sleep(0.25)  # the pace of the calls, not synchronisation
        return calls, seen

    _calls, seen = asyncio.run(session())
    assert len(seen) >= 6, f"the server saw only {len(seen)} different tokens"
    # No refresh token was used twice: oidc-provider answers a reuse with invalid_grant and revokes the grant.
    assert "invalid_grant" not in provider.log_path.read_text()
    current = stored_tokens(user_env)["refresh_token"]
    assert not asyncio.run(provider.is_active(first_refresh_token))
    assert asyncio.run(provider.is_active(current))
    assert stderr.read_text() == ""  # the bridge says nothing on stderr


# --- streaming and server requests ------------------------------------------------------------------------


def test_progress_arrives_while_the_tool_runs_and_server_requests_round_trip(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    add_api_key_server(user_env, mcp_api_key_server())

    async def sample(_context: Any, params: Any) -> CreateMessageResult:
        asked = params.messages[0].content.text
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"sampled {asked}"), model="m"
        )

    async def scenario() -> None:
        async with bridged_session(
            user_env, "keyed", elicitation_callback=elicit_ada, sampling_callback=sample
        ) as client:
            progressed = asyncio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                progressed.set()

            key = f"k{time.monotonic_ns()}"
            tool = asyncio.create_task(
                client.call_tool("progress_then_wait", {"key": key}, progress_callback=on_progress)
            )
            # The tool waits for release(key): it ends only if the progress arrived while it was running.
            await asyncio.wait_for(progressed.wait(), 30)
            assert not tool.done()
            assert await call(client, "release", key=key) == "ok"
            result = await asyncio.wait_for(tool, 30)
            assert isinstance(result.content[0], TextContent) and result.content[0].text == "released"

            assert await call(client, "ask_name") == "hello ada"
            assert await call(client, "sample", prompt="hi") == "sampled hi"

    asyncio.run(scenario())


def test_the_legacy_sse_transport_works_through_the_bridge(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server(transport="sse")
    assert server.url.endswith("/sse")
    add_api_key_server(user_env, server, name="legacy")

    async def scenario() -> None:
        async with bridged_session(user_env, "legacy", elicitation_callback=elicit_ada) as client:
            assert await call(client, "echo", text="over sse") == "over sse"
            assert await call(client, "ask_name") == "hello ada"  # a server request on the legacy stream

    asyncio.run(scenario())
    [bridge_event] = events(daemon, "upstream_transport_legacy_sse")
    assert bridge_event["server"] == "legacy"


# --- sessions lost and found ------------------------------------------------------------------------------


def test_a_server_that_drops_its_sessions_is_reinitialized_transparently(
    daemon: DaemonProcess, user_env: UserEnv, tmp_path: Path
) -> None:
    port, key = free_port(), "restart-key"
    server = start_api_key_server(tmp_path, key, port)
    try:
        add_bridged(user_env, "flaky", "--url", str(server.ready["url"]), "--key-header", "X-API-Key", "-k", key)

        async def scenario() -> None:
            nonlocal server
            async with bridged_session(user_env, "flaky") as client:
                assert await call(client, "echo", text="before") == "before"
                server.stop()  # every session it held is gone: the next request gets a 404
                server = start_api_key_server(tmp_path, key, port)
                assert await call(client, "echo", text="after") == "after"

        asyncio.run(scenario())
    finally:
        server.stop()
    assert len(events(daemon, "upstream_session_reinitialized")) >= 1


def test_the_session_survives_a_daemon_killed_and_restarted(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    add_api_key_server(user_env, mcp_api_key_server())

    async def scenario() -> None:
        async with bridged_session(user_env, "keyed") as client:
            assert await call(client, "echo", text="one") == "one"
            daemon.stop(signal.SIGKILL)
            daemon.start()  # as systemd would; the bridge finds it and replays the handshake
            assert await call(client, "echo", text="two") == "two"

    asyncio.run(scenario())
    restored = [e for e in events(daemon, "bridge_opened") if e.get("restored")]
    assert restored, "the second daemon did not get the replayed handshake"


# --- when a person must act -------------------------------------------------------------------------------


def test_invalid_grant_names_chctl_auth_and_the_session_recovers_after_login(
    daemon: DaemonProcess,
    user_env: UserEnv,
    oidc_provider: OidcProvider,
    mcp_oauth_server: McpOAuthServer,
    tmp_path: Path,
) -> None:
    notified = tmp_path / "notified"
    record = f"import os; open({str(notified)!r}, 'a').write(os.environ['CH_SERVER'] + ' ' + os.environ['CH_STATE'])"
    daemon.stop()
    daemon.extra_env["CH_NOTIFY_COMMAND"] = json.dumps([sys.executable, "-c", record])
    daemon.start()
    add_bridged(user_env, "srv", "--url", mcp_oauth_server.url)
    log_in(user_env)

    async def scenario() -> None:
        async with bridged_session(user_env, "srv") as client:
            assert await call(client, "whoami")
            tokens = stored_tokens(user_env)
            await oidc_provider.revoke(tokens["refresh_token"], "refresh_token")  # the user withdrew access
            await oidc_provider.revoke(tokens["access_token"], "access_token")
            with pytest.raises(MCPError, match=r"needs a new login.*chctl auth srv"):
                await client.call_tool("whoami", {})
            state = json.loads(chctl(user_env, "status", "--json").stdout)["servers"][0]["state"]
            assert state == "needs_reauth"
            wait_for(lambda: notified.exists() and notified.read_text() == "srv needs_reauth", 20, what="notify")
            log_in(user_env)
            assert await call(client, "whoami")  # the same session, without a restart

    asyncio.run(scenario())


# --- the bridge process -----------------------------------------------------------------------------------


def test_closing_stdin_ends_the_bridge_within_a_second_and_deletes_the_upstream_session(
    daemon: DaemonProcess, user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    add_api_key_server(user_env, server)
    command = entry(user_env, "keyed")["command"]
    bridge = subprocess.Popen(
        command,
        env={**user_env.vars(), "CH_NO_AUTOSTART": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert bridge.stdin is not None and bridge.stdout is not None

    def send(message: dict[str, Any]) -> None:
        assert bridge.stdin is not None
        bridge.stdin.write(json.dumps(message).encode() + b"\n")
        bridge.stdin.flush()

    def reply() -> dict[str, Any]:
        assert bridge.stdout is not None
        answer: dict[str, Any] = json.loads(bridge.stdout.readline())
        return answer

    try:
        send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
        )
        assert reply()["result"]["protocolVersion"]
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "live_sessions", "arguments": {}}})
        sessions_with_ours = int(reply()["result"]["content"][0]["text"])
        bridge.stdin.close()
        closed = time.monotonic()
        bridge.wait(timeout=10)
        assert time.monotonic() - closed < 1.0
        assert bridge.returncode == 0
        assert bridge.stderr is not None and bridge.stderr.read() == b""
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()

    async def live_sessions() -> int:
        async with bridged_session(user_env, "keyed") as observer:
            return int(await call(observer, "live_sessions"))

    # The observer's own session counts: ours is gone when the count is back where it was.
    wait_for(lambda: asyncio.run(live_sessions()) == sessions_with_ours, 20, 0.2, "the upstream DELETE")


# --- fault injection: our own Streamable HTTP server --------------------------------------------------------


class ResumableServer:
    """A Streamable HTTP server that drops a tool call's SSE stream after its first event and serves the rest
    only to a GET that names that event in Last-Event-ID (resumability, as servers with an event store do)."""

    def __init__(self) -> None:
        self.resume_requests: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/mcp", self.post)
        app.router.add_get("/mcp", self.get)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/mcp"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def post(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if message.get("method") == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
            return web.json_response(
                {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers={"Mcp-Session-Id": "s-1"}
            )
        if "id" not in message:
            return web.Response(status=202)
        if message.get("method") == "tools/list":
            tool = {"name": "anything", "inputSchema": {"type": "object"}}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [tool]}})
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}}
        await stream.write(f"id: e1\ndata: {json.dumps(note)}\n\n".encode())
        self.pending_id = message["id"]
        assert request.transport is not None
        request.transport.close()  # the stream breaks before the response
        return stream

    async def get(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        if last is None:
            return web.Response(status=405)  # no stream of its own
        self.resume_requests.append(last)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        reply = {"jsonrpc": "2.0", "id": self.pending_id, "result": {"content": [{"type": "text", "text": "resumed"}]}}
        await stream.write(f"id: e2\ndata: {json.dumps(reply)}\n\n".encode())
        return stream


def test_a_dropped_response_stream_is_resumed_with_last_event_id(daemon: DaemonProcess, user_env: UserEnv) -> None:
    async def scenario() -> None:
        server = ResumableServer()
        await server.start()
        try:
            add_bridged(user_env, "resumable", "--url", server.url)
            async with bridged_session(user_env, "resumable") as client:
                assert await call(client, "anything") == "resumed"
            assert server.resume_requests == ["e1"]
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_credential_never_goes_to_a_cleartext_remote_server(daemon: DaemonProcess, user_env: UserEnv) -> None:
    url = "http://mcp.example.invalid/mcp"  # refused before any connection: nothing leaves this machine
    assert chctl(user_env, "init").returncode == 0
    refused = chctl(user_env, "add", "plain", "--bridge", "--url", url, "-k", "a-key-for-nobody")
    assert refused.returncode != 0 and "clear text" in refused.stderr
    assert not (user_env.ch_home / "tokens" / "plain.json").exists()

    # A binding and a credential that got there some other way (an older version, a hand edit): the relay
    # still refuses to carry the credential.
    config = (user_env.project / "opencode.json").resolve()
    BindingStore(user_env.ch_home / "bindings.json").bind("plain", Binding(path=str(config), mode="bridge", url=url))
    TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets").save(
        Credential(name="plain", kind="api_key", state=TokenState.API_KEY, api_key="a-key-for-nobody")
    )
    command = [*entry_command(user_env), "plain"]

    async def scenario() -> None:
        params = StdioServerParameters(
            command=command[0], args=command[1:], env={**user_env.vars(), "CH_NO_AUTOSTART": "1"}
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()

    with pytest.raises(BaseException) as raised:
        asyncio.run(scenario())
    assert "clear text" in messages_of(raised.value)
    assert "a-key-for-nobody" not in daemon.log()


def test_the_bridge_starts_the_daemon_when_none_answers(
    user_env: UserEnv, mcp_api_key_server: McpApiKeyServerFactory
) -> None:
    server = mcp_api_key_server()
    first = DaemonProcess(user_env).start()
    try:
        add_api_key_server(user_env, server)
    finally:
        first.stop()
    command = entry(user_env, "keyed")["command"]

    async def scenario() -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], env=user_env.vars(), cwd=user_env.project)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            assert await call(client, "echo", text="autostarted") == "autostarted"
            status = json.loads(chctl(user_env, "status", "--json").stdout)
            [row] = status["servers"]
            [live] = row["bridges"]
            assert live["transport"] == "streamable-http" and live["requests"] >= 2

    try:
        asyncio.run(scenario())
    finally:
        stopped = chctl(user_env, "daemon", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
