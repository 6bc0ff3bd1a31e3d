"""Pytest plugin: Cloudflare's @cloudflare/workers-oauth-provider, in a Worker run by `wrangler dev`.

The library behind Cloudflare's own MCP servers issues access and refresh tokens shaped `userId:grantId:secret`.
The Worker (cloudflare_worker/worker.js) is both its authorization server and an MCP endpoint at /mcp; its
/authorize approves at once for the user "alice", so the fake browser's redirect-following logs in.

Fixture (module-scoped: wrangler takes seconds to start on a loaded machine):
    workers_oauth_worker -> WorkersOAuthWorker   60 s access tokens (the library's minimum), KV kept on disk
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.ports import closed_port

PEERS_DIR = Path(__file__).resolve().parent
WORKER_DIR = PEERS_DIR / "cloudflare_worker"
NODE_22 = PEERS_DIR / "node_modules" / "node" / "bin" / "node"  # wrangler needs Node >= 22: the npm package `node`
WORKERD = PEERS_DIR / "node_modules" / "workerd" / "bin" / "workerd"  # resolves the platform package's binary
ACCESS_TOKEN_TTL_S = 60  # workers-oauth-provider refuses less (Cloudflare KV's minimum expiration)
READY_TIMEOUT_S = 90.0  # about 6 s when idle; bundling and workerd's start are slow on 2 busy cores
# wrangler dev, offline: no telemetry, no error reports, no update or skills prompts, every file it writes in tmp.
OFFLINE = {
    "CI": "1",
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "WRANGLER_NO_SKILLS_UPDATE_PROMPTS": "true",
    "WRANGLER_CI_DISABLE_CONFIG_WATCHING": "true",
}


@dataclass
class WorkersOAuthWorker:
    """A running Worker: its origin, its MCP endpoint, and a restart that keeps its KV (every grant)."""

    origin: str
    port: int
    startup_s: float  # wrangler's start until the Worker answered, as measured by serve.mjs
    work_dir: Path = dataclasses.field(repr=False)
    _inspector_port: int = dataclasses.field(repr=False)
    _peer: PeerProcess | None = dataclasses.field(repr=False, default=None)

    @property
    def mcp_url(self) -> str:
        return f"{self.origin}/mcp"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "wrangler.log"

    async def set_next_user(self, user_id: str) -> None:
        """The user id the next login is granted for (one login only; then "alice" again)."""
        async with aiohttp.ClientSession() as http, http.post(f"{self.origin}/peer/next-user", data=user_id) as answer:
            assert answer.status == 204

    async def grant_count(self, user_id: str) -> int:
        """How many grants `user_id` has at the Worker: a revoked one is gone."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.origin}/peer/grants", params={"user": user_id}) as answer,
        ):
            answer.raise_for_status()
            return int((await answer.json())["count"])

    def start(self) -> None:
        env = {
            **OFFLINE,
            "CF_PEER_CONFIG": str(self.work_dir / "wrangler.json"),
            "CF_PEER_PORT": str(self.port),
            "CF_PEER_INSPECTOR_PORT": str(self._inspector_port),
            "CF_PEER_PERSIST": str(self.work_dir / "state"),
            "CF_PEER_READY_TIMEOUT_S": str(READY_TIMEOUT_S),
            "WRANGLER_LOG_PATH": str(self.work_dir / "wrangler-logs"),
            "WRANGLER_CACHE_DIR": str(self.work_dir / "cache"),
            "WRANGLER_REGISTRY_PATH": str(self.work_dir / "registry"),
            "XDG_CONFIG_HOME": str(self.work_dir / "config"),
        }
        self._peer = start_peer(
            [str(NODE_22), str(WORKER_DIR / "serve.mjs")],
            log_path=self.log_path,
            env=env,
            cwd=self.work_dir,
            timeout=READY_TIMEOUT_S + 10,  # serve.mjs gives up first, with its reason in the log
        )
        self.origin = str(self._peer.ready["issuer"])
        self.startup_s = float(self._peer.ready["startup_s"])

    def stop(self) -> None:
        if self._peer is not None:
            self._peer.stop()
            self._peer = None

    def restart(self) -> None:
        """Stop wrangler and start it again on the same port and KV directory."""
        self.stop()
        self.start()


def _write_config(work_dir: Path, port: int) -> None:
    # The config lives in the test's tmp dir, so wrangler's bundle (.wrangler/) and state stay out of the tree;
    # `main` is absolute, and esbuild resolves the Worker's imports from tests/peers/node_modules beside it.
    config = {
        "name": "workers-oauth-provider-peer",
        "main": str(WORKER_DIR / "worker.js"),
        "compatibility_date": "2026-11-01",
        "kv_namespaces": [{"binding": "OAUTH_KV", "id": "oauth-kv-local"}],
        "vars": {"RESOURCE": f"http://127.0.0.1:{port}/mcp", "ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL_S)},
    }
    (work_dir / "wrangler.json").write_text(json.dumps(config, indent=2))


def start_workers_oauth_worker(work_dir: Path) -> WorkersOAuthWorker:
    for needed, what in ((NODE_22, "Node 22 (npm package `node`)"), (WORKERD, "workerd's platform binary")):
        if not os.access(needed, os.X_OK):
            pytest.skip(f"{what} is not installed at {needed}: run `npm install --prefix tests/peers`")
    port = closed_port()
    _write_config(work_dir, port)
    worker = WorkersOAuthWorker(
        origin=f"http://127.0.0.1:{port}", port=port, startup_s=0.0, work_dir=work_dir, _inspector_port=closed_port()
    )
    worker.start()
    return worker


@pytest.fixture(scope="module")
def workers_oauth_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersOAuthWorker]:
    worker = start_workers_oauth_worker(tmp_path_factory.mktemp("workers-oauth"))
    yield worker
    worker.stop()
