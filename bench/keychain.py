"""Secrets at rest: what the keychain costs against the token files.

1. One read and one write of a credential's secret values: the keychain (GNOME Keyring's Secret Service over a
   D-Bus session bus, through the `keyring` library, as the daemon calls it) against the token file (an atomic
   0600 write; a read and parse). Medians of `--runs`.
2. The daemon's start with `--servers` API-key servers: from the process start to its first answer (the daemon
   reads every referenced secret before it serves), the keychain against the token files, and the keychain with a
   confidential OAuth client's registration beside each server (its client secret a second item); medians of
   `--starts` restarts.

Needs `dbus-daemon`, `gnome-keyring-daemon` and `secret-tool` (./scripts/test installs them).

    .venv/bin/python bench/keychain.py [--runs 200] [--servers 100] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_env

from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.keychain import open_keychain
from context_harness.stores.token_store import TOKEN_FIELDS, TokenStore, dump
from tests.support.daemon import rpc
from tests.support.keychain import SessionKeychain, missing_tools


def credential(name: str) -> Credential:
    tokens = OAuthTokens(access_token=secrets.token_urlsafe(32), refresh_token=secrets.token_urlsafe(32))
    return Credential(name=name, kind="oauth", state=TokenState.ACTIVE, tokens=tokens, issuer="https://as.example")


def per_call(keychain: SessionKeychain, home: Path, runs: int) -> dict[str, float]:
    """Medians (ms) of one write and one read, keychain and file, alternating."""
    import os

    os.environ.update(keychain.env())
    store = open_keychain(str(home))
    tokens = TokenStore(home / "tokens", home / "secrets")
    samples: dict[str, list[float]] = {"keychain write": [], "keychain read": [], "file write": [], "file read": []}
    for i in range(runs):
        fresh = credential("bench")
        values = TOKEN_FIELDS.take(dump(fresh), f"s{i}")
        began = time.perf_counter()
        store.write("bench", values)
        samples["keychain write"].append(time.perf_counter() - began)
        began = time.perf_counter()
        assert store.read("bench") == values
        samples["keychain read"].append(time.perf_counter() - began)
        began = time.perf_counter()
        tokens.write_inline(fresh)
        samples["file write"].append(time.perf_counter() - began)
        began = time.perf_counter()
        assert tokens.load("bench") == fresh
        samples["file read"].append(time.perf_counter() - began)
    store.delete("bench")
    return {label: bench_env.median_ms(values) for label, values in samples.items()}


def call(socket_path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    reply = rpc(socket_path, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}, timeout=60)
    if "error" in reply:
        raise SystemExit(f"{method} failed: {reply['error']}")
    return reply["result"]


def start_ms(env: bench_env.UserEnv, extra: dict[str, str], starts: int) -> float:
    """Median time from the daemon's process start to its first answer."""
    samples = []
    for _ in range(starts):
        began = time.perf_counter()
        daemon = bench_env.DaemonProcess(env, extra_env={**bench_env.QUIET_DAEMON, **extra}).start()
        try:
            call(env.socket, "daemon.status")
            samples.append(time.perf_counter() - began)
        finally:
            daemon.stop()
    return bench_env.median_ms(samples)


def daemon_start(keychain: SessionKeychain, servers: int, starts: int) -> dict[str, Any]:
    """Start times with `servers` API-key servers in each store, and in the keychain with a confidential OAuth
    client's registration beside each (two items a server: the key's and the client secret's)."""
    figures: dict[str, Any] = {}
    for store in ("file", "keyring", "keyring+clients"):
        with bench_env.user_env() as env:
            extra = {**keychain.env(), "CH_SECRET_STORE": store.split("+")[0]}
            with bench_env.running_daemon(env, extra):
                cwd = str(env.project)
                call(env.socket, "config.init", {"cwd": cwd})
                for i in range(servers):
                    params = {"cwd": cwd, "name": f"srv{i:03d}", "url": f"http://127.0.0.1:9/mcp/{i}", "bridge": True}
                    call(env.socket, "mcp.add", {**params, "api_key": secrets.token_urlsafe(24)})
                    if store == "keyring+clients":
                        plant_registration(env.ch_home / "clients" / f"srv{i:03d}.json")
                if store == "keyring+clients":
                    call(env.socket, "secrets.migrate", {"to": "keyring"})  # the planted client secrets move in
                rows = call(env.socket, "status")["servers"]
                places = {p["where"] for r in rows for p in r["secret_at"]}
                assert places == {"token_file" if store == "file" else "keychain"}, places
            figures[store] = start_ms(env, extra, starts)
    return figures


def plant_registration(path: Path) -> None:
    """A confidential client's registration as the `file` store keeps it (its secret inline)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    registration = {"issuer": "https://as.example", "client_id": secrets.token_hex(8)}
    registration.update(client_secret=secrets.token_urlsafe(24), token_endpoint_auth_method="client_secret_post")
    path.write_text(json.dumps(registration))
    path.chmod(0o600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"needs {', '.join(missing)} (./scripts/test installs them)")

    with bench_env.user_env() as env:
        keychain = SessionKeychain(root=env.root / "kc", home=env.home)
        keychain.root.mkdir()
        try:
            keychain.start_bus()
            keychain.start_keyring()
            calls = per_call(keychain, env.home / "calls", args.runs)
            starts = daemon_start(keychain, args.servers, args.starts)
        finally:
            keychain.stop()
    version = subprocess.run(["gnome-keyring-daemon", "--version"], capture_output=True, text=True, check=False)
    first_line = (version.stdout.strip().splitlines() or ["gnome-keyring"])[0]
    bench_env.report(
        f"secrets at rest: keychain ({first_line}, Secret Service over D-Bus) against token files",
        [(label, f"{ms:7.2f} ms") for label, ms in calls.items()]
        + [
            (f"daemon start, {args.servers} servers, token files", f"{starts['file']:7.1f} ms"),
            (f"daemon start, {args.servers} servers, keychain", f"{starts['keyring']:7.1f} ms"),
            (f"daemon start, {args.servers} servers, keychain + a client each", f"{starts['keyring+clients']:7.1f} ms"),
        ],
        {"runs": args.runs, "servers": args.servers, "per_call_ms": calls, "daemon_start_ms": starts},
    )


if __name__ == "__main__":
    main()
