"""1,000 OAuth servers whose tokens all expire within the same 60 s, refreshed by the real daemon against a
local token endpoint that takes 20 ms per answer and rotates refresh tokens.

The state home is prepared before the daemon starts: one token file per server (tokens issued
`--lifetime` seconds before their expiry, expiries spread over `--window` seconds starting `--lead`
seconds from now, so the 75% refresh point falls inside the run), and `--bound` of them written into one
opencode.json so publishing the new header is part of the work. The daemon runs with default settings
(refresh at 75% of the lifetime, 5% jitter, at most 16 refreshes at once).

The endpoint counts requests per refresh token (a second use would be a double refresh or a burned
rotation) and requests in flight. Targets: every token refreshed before it expires, none twice,
<= 10 CPU-seconds and <= 100 MiB for the daemon.

    .venv/bin/python bench/refresh_scale.py [--servers 1000] [--window 60] [--lifetime 120] [--lead 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import bench_env
from aiohttp import web

from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore

TARGET_CPU_S = 10.0
TARGET_MIB = 100
ENDPOINT_DELAY_S = 0.02
SETTLE_S = 0.5  # after the last answer, so the CPU figure includes its save and publish
NEW_TOKEN_LIFETIME_S = 3600  # long enough that nothing is due a second time during the run
CLIENT_ID = "bench-client"


@dataclass
class TokenEndpoint:
    """`POST /token` for grant_type=refresh_token: 20 ms per answer, a new refresh token every time."""

    owner: dict[str, str]  # refresh token -> server name; a used one stays, so a replay is recognised
    all_refreshed: asyncio.Event = field(default_factory=asyncio.Event)  # every server in `owner` at the start
    uses: Counter[str] = field(default_factory=Counter)
    refreshed_at: dict[str, list[float]] = field(default_factory=dict)  # server -> wall-clock arrival times
    answered: dict[str, str] = field(default_factory=dict)  # server -> the access token we issued
    in_flight: int = 0
    peak_in_flight: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        self.servers = len(self.owner)

    async def token(self, request: web.Request) -> web.Response:
        arrived = time.time()
        form = await request.post()
        presented = str(form.get("refresh_token", ""))
        self.uses[presented] += 1  # counted on arrival, so two concurrent uses are caught too
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(ENDPOINT_DELAY_S)
            server = self.owner.get(presented)
            if server is None or self.uses[presented] > 1 or form.get("grant_type") != "refresh_token":
                self.rejected += 1
                return web.json_response({"error": "invalid_grant"}, status=400)
            rotated = secrets.token_urlsafe(32)
            self.owner[rotated] = server
            self.answered[server] = secrets.token_urlsafe(32)
            self.refreshed_at.setdefault(server, []).append(arrived)
            if len(self.refreshed_at) == self.servers:
                self.all_refreshed.set()
            return web.json_response(
                {
                    "access_token": self.answered[server],
                    "token_type": "Bearer",
                    "expires_in": NEW_TOKEN_LIFETIME_S,
                    "refresh_token": rotated,
                }
            )
        finally:
            self.in_flight -= 1


def prepare_state(env: bench_env.UserEnv, token_url: str, args: argparse.Namespace) -> dict[str, float]:
    """Write the token files and the bound config; returns each server's expiry (wall clock)."""
    tokens = TokenStore(env.ch_home / "tokens", env.ch_home / "secrets")
    now = time.time()
    expiries: dict[str, float] = {}
    for i in range(args.servers):
        name = f"srv{i:04d}"
        expires_at = now + args.lead + args.window * i / max(args.servers - 1, 1)
        expiries[name] = expires_at
        tokens.save(
            Credential(
                name=name,
                kind="oauth",
                state=TokenState.ACTIVE,
                token_endpoint=token_url,
                client_id=CLIENT_ID,
                issuer=token_url.rsplit("/", 1)[0],
                resource=f"http://127.0.0.1:9/mcp/{i}",
                tokens=OAuthTokens(
                    access_token=secrets.token_urlsafe(32),
                    refresh_token=f"rt-{name}-0",
                    expires_at=expires_at,
                    issued_at=expires_at - args.lifetime,
                ),
            )
        )
    config = env.project / "opencode.json"
    bound = sorted(expiries)[: args.bound]
    config.write_text(
        json.dumps(
            {
                "$schema": "https://opencode.ai/config.json",
                "mcp": {
                    name: {
                        "type": "remote",
                        "url": f"http://127.0.0.1:9/mcp/{name}",
                        "oauth": False,
                        "headers": {"Authorization": "Bearer old"},
                    }
                    for name in bound
                },
            },
            indent=2,
        )
    )
    bindings = BindingStore(env.ch_home / "bindings.json")
    for name in bound:
        bindings.bind(name, config.resolve(), SecretMode.INLINE)
    return expiries


async def run(env: bench_env.UserEnv, args: argparse.Namespace) -> dict[str, Any]:
    endpoint = TokenEndpoint(owner={f"rt-srv{i:04d}-0": f"srv{i:04d}" for i in range(args.servers)})
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        expiries = prepare_state(env, f"http://127.0.0.1:{port}/token", args)
        daemon = bench_env.DaemonProcess(env, extra_env=bench_env.QUIET_DAEMON)
        await asyncio.to_thread(daemon.start)  # the endpoint keeps answering while we wait for the socket
        assert daemon.proc is not None
        started = time.monotonic()
        try:
            cpu_after_start = bench_env.cpu_seconds(daemon.proc.pid)
            with contextlib.suppress(TimeoutError):  # a token left unrefreshed shows in the figures
                await asyncio.wait_for(endpoint.all_refreshed.wait(), max(expiries.values()) + 5 - time.time())
            await asyncio.sleep(SETTLE_S)
            cpu = bench_env.cpu_seconds(daemon.proc.pid)
            memory = bench_env.proc_status(daemon.proc.pid)
            elapsed = time.monotonic() - started
        finally:
            await asyncio.to_thread(daemon.stop)  # SIGTERM: refreshes in flight finish their writes first
    finally:
        await runner.cleanup()

    stored = TokenStore(env.ch_home / "tokens", env.ch_home / "secrets")
    saved = sum(
        1
        for name, token in endpoint.answered.items()
        if (c := stored.load(name)) is not None and c.tokens is not None and c.tokens.access_token == token
    )
    config_text = (env.project / "opencode.json").read_text()
    published = sum(
        1
        for name in sorted(expiries)[: args.bound]
        if name in endpoint.answered and endpoint.answered[name] in config_text
    )
    lead_s = [expiries[name] - times[0] for name, times in endpoint.refreshed_at.items()]
    return {
        "servers": args.servers,
        "refreshed": len(endpoint.refreshed_at),
        "refreshed_before_expiry": sum(1 for s in lead_s if s > 0),
        "saved_to_disk": saved,
        "bound_configs_updated": f"{published}/{args.bound}",
        "refreshed_twice": sum(1 for times in endpoint.refreshed_at.values() if len(times) > 1),
        "refresh_token_reused": sum(1 for n in endpoint.uses.values() if n > 1),
        "rejected_requests": endpoint.rejected,
        "seconds_before_expiry": {
            "min": round(min(lead_s), 2),
            "median": round(statistics.median(lead_s), 2),
            "max": round(max(lead_s), 2),
        }
        if lead_s
        else None,
        "peak_concurrent_requests": endpoint.peak_in_flight,
        "daemon_cpu_s": round(cpu, 2),
        "daemon_cpu_s_start_up": round(cpu_after_start, 2),
        "daemon_rss_mib": round(memory["VmRSS"] / bench_env.MIB, 1),
        "daemon_peak_mib": round(memory["VmHWM"] / bench_env.MIB, 1),
        "run_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0, help="all tokens expire within this many seconds")
    parser.add_argument("--lifetime", type=float, default=120.0, help="each token's lifetime (s)")
    parser.add_argument("--lead", type=float, default=50.0, help="seconds from now to the first expiry")
    parser.add_argument("--bound", type=int, default=10, help="servers written into one opencode.json")
    args = parser.parse_args()

    with bench_env.user_env() as env:
        figures = asyncio.run(run(env, args))

    spread = figures["seconds_before_expiry"] or {}
    bench_env.report(
        f"{args.servers} tokens expiring within {args.window:g} s, endpoint {ENDPOINT_DELAY_S * 1000:.0f} ms, "
        f"lifetime {args.lifetime:g} s (targets: all before expiry, none twice, <= {TARGET_CPU_S:g} CPU-s, "
        f"<= {TARGET_MIB} MiB)",
        [
            ("refreshed before expiry", f"{figures['refreshed_before_expiry']} / {args.servers}"),
            ("saved to disk / bound configs", f"{figures['saved_to_disk']} / {figures['bound_configs_updated']}"),
            ("refreshed twice / token reused", f"{figures['refreshed_twice']} / {figures['refresh_token_reused']}"),
            ("s before expiry min/med/max", f"{spread.get('min')} / {spread.get('median')} / {spread.get('max')}"),
            ("peak concurrent requests", figures["peak_concurrent_requests"]),
            ("daemon CPU", f"{figures['daemon_cpu_s']} s  ({figures['daemon_cpu_s_start_up']} s of it start-up)"),
            ("daemon memory", f"RSS {figures['daemon_rss_mib']} MiB, peak {figures['daemon_peak_mib']} MiB"),
            ("run", f"{figures['run_s']} s"),
        ],
        figures,
    )


if __name__ == "__main__":
    main()
