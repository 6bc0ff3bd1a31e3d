"""`chctl bridge` against the alternatives, side by side in one run, against the same MCP SDK server (Streamable
HTTP, API-key guarded) on 127.0.0.1:

- direct:     a minimal Streamable HTTP client (aiohttp) POSTing to the server itself;
- bridge:     `chctl bridge NAME` (the installed console script, as the config entry runs it), the daemon
              carrying the traffic;
- mcp-remote: mcp-remote 0.15.1 (npm, pinned in tests/peers), the stdio bridge people use today, with the
              key in `--header`.

Figures: per `tools/call` (echo) p50/p95/p99 latency and the overhead over direct (rounds alternate between the
three so drift hits all alike); the bridge process's and mcp-remote's RSS after the calls; time from spawn to
the `initialize` result; calls/s with 32 sessions at once. The stdio clients are raw JSON-RPC line clients, so
the figures are the transports', not an SDK client's.

    .venv/bin/python bench/bridge.py [--calls 300] [--spawns 10] [--sessions 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import bench_env

from tests.peers.mcp_servers import APP_SCRIPT
from tests.peers.peer_process import start_peer
from tests.support.daemon import chctl

MCP_REMOTE = bench_env.REPO / "tests" / "peers" / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
CHCTL = Path(sys.executable).parent / "chctl"
TARGETS = {"overhead_p50_ms": 2.0, "bridge_rss_mib": 15.0}
INITIALIZE_PARAMS = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "0"},
}


def echo(request_id: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}},
    }


class StdioClient:
    """A raw MCP client on a child's stdio: one request at a time, notifications skipped."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.proc: asyncio.subprocess.Process | None = None
        self.next_id = 0

    async def start(self) -> float:
        """Spawn and initialize; the seconds from spawn to the initialize result."""
        began = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=16 * 1024 * 1024,
        )
        await self.request("initialize", INITIALIZE_PARAMS)
        took = time.perf_counter() - began
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return took

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return await self.reply(self.next_id)

    async def reply(self, request_id: int) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.argv[0]} closed its stdout")
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(message["error"].get("message"))
                return message

    async def call(self) -> float:
        self.next_id += 1
        began = time.perf_counter()
        await self.send(echo(self.next_id))
        await self.reply(self.next_id)
        return time.perf_counter() - began

    async def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class DirectClient:
    """A minimal Streamable HTTP client: POST, then read the JSON or SSE reply."""

    def __init__(self, url: str, headers: dict[str, str], http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http
        self.headers = {**headers, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        self.next_id = 0

    async def start(self) -> float:
        began = time.perf_counter()
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS}
        async with self.http.post(self.url, json=init, headers=self.headers) as response:
            self.headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
            version = _messages(response.headers.get("Content-Type", ""), await response.read())[0]["result"]
            self.headers["MCP-Protocol-Version"] = version["protocolVersion"]
        took = time.perf_counter() - began
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.http.post(self.url, json=note, headers=self.headers) as response:
            await response.read()
        return took

    async def call(self) -> float:
        """Timed to the response's arrival, as a client awaiting it sees it (an SSE reply's stream may stay
        open a moment longer: drained afterwards, untimed, so the connection is reused)."""
        self.next_id += 1
        body = json.dumps(echo(self.next_id)).encode()
        began = time.perf_counter()
        async with self.http.post(self.url, data=body, headers=self.headers) as response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                replies = _messages("application/json", await response.read())
                assert any(r.get("id") == self.next_id for r in replies)
                return time.perf_counter() - began
            while line := await response.content.readline():
                if line.startswith(b"data:") and json.loads(line[5:]).get("id") == self.next_id:
                    took = time.perf_counter() - began
                    await response.read()
                    return took
        raise RuntimeError("the stream ended without the response")

    async def stop(self) -> None:
        async with self.http.delete(self.url, headers=self.headers) as response:
            await response.read()


def _messages(content_type: str, body: bytes) -> list[dict[str, Any]]:
    if content_type.startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in body.decode().splitlines() if line.startswith("data:")]
    return [json.loads(body)]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)


async def measure(args: argparse.Namespace, env: bench_env.UserEnv, url: str, key: str) -> dict[str, Any]:
    client_env = {**env.vars(), **bench_env.QUIET_DAEMON, "CH_NO_AUTOSTART": "1"}
    bridge_argv = [str(CHCTL), "bridge", "bench"]
    remote_argv = ["node", str(MCP_REMOTE), url, "--header", f"X-API-Key:{key}", "--transport", "http-only"]
    figures: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        direct = DirectClient(url, {"X-API-Key": key}, http)
        bridge = StdioClient(bridge_argv, client_env)
        remote = StdioClient(remote_argv, client_env)
        clients = {"direct": direct, "bridge": bridge, "mcp_remote": remote}
        for client in clients.values():
            await client.start()
        latencies: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(10):  # warm-up
            for client in clients.values():
                await client.call()
        for _ in range(args.calls):
            for name, client in clients.items():
                latencies[name].append(await client.call())
        for name, samples in latencies.items():
            figures[f"{name}_p50_ms"] = percentile(samples, 0.5)
            figures[f"{name}_p95_ms"] = percentile(samples, 0.95)
            figures[f"{name}_p99_ms"] = percentile(samples, 0.99)
        for name in ("bridge", "mcp_remote"):
            figures[f"{name}_overhead_p50_ms"] = round(figures[f"{name}_p50_ms"] - figures["direct_p50_ms"], 2)
        assert bridge.proc is not None and remote.proc is not None
        figures["bridge_rss_mib"] = round(bench_env.proc_status(bridge.proc.pid)["VmRSS"] / bench_env.MIB, 1)
        figures["mcp_remote_rss_mib"] = round(bench_env.proc_status(remote.proc.pid)["VmRSS"] / bench_env.MIB, 1)
        for client in clients.values():
            await client.stop()

        for name, argv in (("bridge", bridge_argv), ("mcp_remote", remote_argv)):
            spawns = []
            for _ in range(args.spawns):
                client = StdioClient(argv, client_env)
                spawns.append(await client.start())
                await client.stop()
            figures[f"{name}_spawn_to_initialized_ms"] = round(statistics.median(spawns) * 1000, 1)

        for name, make in (
            ("direct", lambda: DirectClient(url, {"X-API-Key": key}, http)),
            ("bridge", lambda: StdioClient(bridge_argv, client_env)),
        ):
            sessions = [make() for _ in range(args.sessions)]
            await asyncio.gather(*(s.start() for s in sessions))
            deadline = time.perf_counter() + args.seconds

            async def loop(session: Any, deadline: float = deadline) -> int:
                done = 0
                while time.perf_counter() < deadline:
                    await session.call()
                    done += 1
                return done

            began = time.perf_counter()
            total = sum(await asyncio.gather(*(loop(s) for s in sessions)))
            figures[f"{name}_{args.sessions}_sessions_calls_per_s"] = round(total / (time.perf_counter() - began))
            await asyncio.gather(*(s.stop() for s in sessions))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--spawns", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    key = secrets.token_urlsafe(24)
    with bench_env.user_env() as env:
        server = start_peer(
            [sys.executable, str(APP_SCRIPT), "--api-key-header", "X-API-Key"],
            log_path=env.root / "mcp.log",
            env={"MCP_PEER_API_KEY": key},
        )
        try:
            with bench_env.running_daemon(env):
                url = str(server.ready["url"])
                assert chctl(env, "init").returncode == 0
                added = chctl(env, "add", "bench", "--bridge", "--url", url, "--key-header", "X-API-Key", "-k", key)
                assert added.returncode == 0, added.stderr
                figures = asyncio.run(measure(args, env, url, key))
        finally:
            server.stop()
    rows = [
        (
            "tools/call p50 / p95 / p99, direct",
            f"{figures['direct_p50_ms']} / {figures['direct_p95_ms']} / {figures['direct_p99_ms']} ms",
        ),
        (
            "tools/call p50 / p95 / p99, chctl bridge",
            f"{figures['bridge_p50_ms']} / {figures['bridge_p95_ms']} / {figures['bridge_p99_ms']} ms",
        ),
        (
            "tools/call p50 / p95 / p99, mcp-remote",
            f"{figures['mcp_remote_p50_ms']} / {figures['mcp_remote_p95_ms']} / {figures['mcp_remote_p99_ms']} ms",
        ),
        (
            "overhead over direct (p50): bridge / mcp-remote",
            f"{figures['bridge_overhead_p50_ms']} / {figures['mcp_remote_overhead_p50_ms']} ms "
            f"(target <= {TARGETS['overhead_p50_ms']} and below mcp-remote)",
        ),
        (
            "RSS: bridge process / mcp-remote",
            f"{figures['bridge_rss_mib']} / {figures['mcp_remote_rss_mib']} MiB "
            f"(target <= {TARGETS['bridge_rss_mib']} and < 1/3 of mcp-remote)",
        ),
        (
            "spawn to initialize result: bridge / mcp-remote",
            f"{figures['bridge_spawn_to_initialized_ms']} / {figures['mcp_remote_spawn_to_initialized_ms']} ms",
        ),
        (
            f"calls/s with {args.sessions} sessions: direct / bridge",
            f"{figures[f'direct_{args.sessions}_sessions_calls_per_s']} / "
            f"{figures[f'bridge_{args.sessions}_sessions_calls_per_s']}",
        ),
    ]
    bench_env.report(
        "chctl bridge vs direct Streamable HTTP vs mcp-remote (MCP SDK server on 127.0.0.1)", rows, figures
    )


if __name__ == "__main__":
    main()
