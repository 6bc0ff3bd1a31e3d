"""The full OAuth login against the real oidc-provider, done by our daemon and by the `mcp` SDK's own
`OAuthClientProvider`, alternating, median of --runs each; reported as the ratio ours / SDK (target <= 1.0).

Both flows make the same steps against the same peers (an MCP SDK resource server that introspects at
oidc-provider): an unauthenticated request answered 401 -> protected-resource and authorization-server
discovery -> dynamic client registration -> consent (fake_browser.complete_consent: login and consent
pages, a fresh cookie jar each time) -> code redeemed for tokens.
- Ours: RPC `auth.start` for a fresh server name (so registration happens every run: registrations are
  kept per server), consent, the browser's GET of the daemon's callback (done here), RPC `auth.wait`.
  After ten runs, each waits (untimed) for the daemon's limit on new registrations at one issuer.
  It ends when the tokens are stored and the header is written into opencode.json: our real work.
- SDK: a fresh in-memory token storage per run (so it registers every run too), driven by one httpx
  request to the MCP server; the clock stops when the SDK hands its tokens to the storage, so neither
  the retried MCP request nor any config write is counted for it.
Consent is the same for both and the slowest step, so the figures are also shown without it.

    .venv/bin/python bench/auth_flow.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import bench_env
from mcp.client.auth import OAuthClientProvider
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from context_harness.oauth.registration import REGISTRATION_BURST, REGISTRATION_REFILL_S
from tests.peers.fake_browser import complete_consent
from tests.peers.mcp_servers import APP_SCRIPT, McpOAuthServer
from tests.peers.oidc import OidcConfig, OidcProvider, start_oidc_provider
from tests.peers.peer_process import start_peer

TARGET_RATIO = 1.0
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Timing:
    total_s: float
    consent_s: float

    @property
    def without_consent_s(self) -> float:
        return self.total_s - self.consent_s


def start_mcp_oauth_server(provider: OidcProvider, log_path: Path) -> McpOAuthServer:
    """The resource server of tests/peers/mcp_servers.py's fixture, started outside pytest."""
    client_id, client_secret = provider.introspection_client
    args = ["--introspect", provider.issuer, "--client-id", client_id, "--scopes", "mcp:read mcp:write"]
    peer = start_peer(
        [sys.executable, str(APP_SCRIPT), *args], log_path=log_path, env={"MCP_PEER_CLIENT_SECRET": client_secret}
    )
    return McpOAuthServer(
        url=str(peer.ready["url"]),
        resource=str(peer.ready["resource"]),
        issuer=provider.issuer,
        scopes=("mcp:read", "mcp:write"),
        log_path=log_path,
        _peer=peer,
    )


async def rpc(socket_path: Path, method: str, params: dict[str, Any]) -> Any:
    reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=1024 * 1024)
    try:
        writer.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode() + b"\n")
        reply = json.loads(await reader.readline())
    finally:
        writer.close()
        await writer.wait_closed()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


# --- ours ------------------------------------------------------------------------------------------


async def our_flow(socket_path: Path, name: str, browser: aiohttp.ClientSession) -> Timing:
    started = time.perf_counter()
    flow = await rpc(socket_path, "auth.start", {"name": name})
    consent_started = time.perf_counter()
    redirect = await complete_consent(flow["authorization_url"])
    consent_s = time.perf_counter() - consent_started
    async with browser.get(redirect) as response:  # the browser lands on the daemon's callback listener
        await response.read()
    done = await rpc(socket_path, "auth.wait", {"flow_id": flow["flow_id"]})
    total_s = time.perf_counter() - started
    if done["state"] != "active" or not done["configs"]:
        raise RuntimeError(f"login of {name} ended as {done['state']} with configs {done['configs']}")
    return Timing(total_s, consent_s)


def header_written(config: Path, name: str) -> bool:
    entry = json.loads(config.read_text())["mcp"][name]
    return str(entry.get("headers", {}).get("Authorization", "")).startswith("Bearer ")


# --- the SDK's reference client --------------------------------------------------------------------


@dataclass
class MemoryStorage:
    """The SDK's TokenStorage in memory; notes when the tokens arrive (the end of the flow)."""

    tokens: OAuthToken | None = None
    client: OAuthClientInformationFull | None = None
    tokens_at: float | None = field(default=None)

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens_at = time.perf_counter()
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def sdk_flow(server: McpOAuthServer) -> Timing:
    storage = MemoryStorage()
    redirects: list[str] = []
    consent_s = 0.0

    async def open_browser(authorization_url: str) -> None:
        nonlocal consent_s
        consent_started = time.perf_counter()
        redirects.append(await complete_consent(authorization_url))
        consent_s = time.perf_counter() - consent_started

    async def read_callback() -> AuthorizationCodeResult:
        params = {key: values[0] for key, values in parse_qs(urlsplit(redirects[-1]).query).items()}
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl("http://127.0.0.1:53999/callback")],
        grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none",
        client_name="mcp-sdk-bench",
    )
    auth = OAuthClientProvider(server.url, metadata, storage, open_browser, read_callback)
    started = time.perf_counter()
    async with create_mcp_http_client(auth=auth) as http:
        response = await http.post(server.url, json=INITIALIZE, headers=MCP_HEADERS)
    if storage.tokens_at is None or storage.client is None or response.status_code != 200:
        raise RuntimeError(f"SDK flow did not finish: HTTP {response.status_code}")
    return Timing(storage.tokens_at - started, consent_s)


# --- the run ---------------------------------------------------------------------------------------


async def compare(env: bench_env.UserEnv, server: McpOAuthServer, runs: int) -> dict[str, list[Timing]]:
    cwd = str(env.project)
    await rpc(env.socket, "config.init", {"cwd": cwd})
    config = env.project / "opencode.json"
    timings: dict[str, list[Timing]] = {"ours": [], "sdk": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as browser:
        for i in range(runs + 1):  # run 0 warms both up (imports, first connections) and is not counted
            name = f"srv{i:02d}"
            await rpc(env.socket, "mcp.add", {"cwd": cwd, "name": name, "url": server.url})  # not timed
            if i >= REGISTRATION_BURST:  # the daemon's limit on new registrations at one issuer: wait, untimed
                await asyncio.sleep(REGISTRATION_REFILL_S)
            ours = await our_flow(env.socket, name, browser)
            if not header_written(config, name):
                raise RuntimeError(f"no Authorization header for {name} in {config}")
            sdk = await sdk_flow(server)
            if i > 0:
                timings["ours"].append(ours)
                timings["sdk"].append(sdk)
    return timings


def median_ms(timings: list[Timing], attribute: str) -> float:
    return round(float(statistics.median(getattr(t, attribute) for t in timings)) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    with bench_env.user_env() as env:
        provider = start_oidc_provider(OidcConfig(), env.root / "oidc-provider.log")
        try:
            server = start_mcp_oauth_server(provider, env.root / "mcp-server.log")
            try:
                with bench_env.running_daemon(env):
                    timings = asyncio.run(compare(env, server, args.runs))
            finally:
                server.stop()
        finally:
            provider.stop()

    figures = {
        who: {
            "total_ms": median_ms(t, "total_s"),
            "consent_ms": median_ms(t, "consent_s"),
            "without_consent_ms": median_ms(t, "without_consent_s"),
        }
        for who, t in timings.items()
    }
    ratio = round(figures["ours"]["total_ms"] / figures["sdk"]["total_ms"], 3)
    ratio_without_consent = round(figures["ours"]["without_consent_ms"] / figures["sdk"]["without_consent_ms"], 3)
    bench_env.report(
        f"OAuth login, discovery -> registration -> consent -> tokens, median of {args.runs} each "
        f"(target ours/SDK <= {TARGET_RATIO})",
        [
            *(
                (
                    f"{who} (config write: {'yes' if who == 'ours' else 'no'})",
                    f"{f['total_ms']:7.1f} ms   consent {f['consent_ms']:6.1f} ms   without consent "
                    f"{f['without_consent_ms']:6.1f} ms",
                )
                for who, f in figures.items()
            ),
            ("ratio ours / SDK", f"{ratio:.2f}   without consent {ratio_without_consent:.2f}"),
        ],
        {
            "runs": args.runs,
            "registration": "fresh every run (new server name / new SDK storage)",
            "ours": figures["ours"],
            "sdk": figures["sdk"],
            "ratio": ratio,
            "ratio_without_consent": ratio_without_consent,
            "target_ratio": TARGET_RATIO,
        },
    )


if __name__ == "__main__":
    main()
