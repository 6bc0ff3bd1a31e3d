"""What a renewal without a person costs the daemon: the median time of `token.refresh` (the RPC behind `chctl
refresh`) for a server with OAuth client credentials (its secret by HTTP Basic; a `private_key_jwt` assertion
signed with an ES256 key) and for one whose token comes from a company identity provider (the RFC 8693 token
exchange for an ID-JAG, then the JWT-bearer grant), against the real peers of the tests: oidc-provider (the grant,
the IdP and its token exchange), tests/peers/id_jag_server.py and an MCP SDK server for discovery. Also the time
of `mcp.add`, which discovers and fetches the first token. Median of --runs each.

    .venv/bin/python bench/machine_logins.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any

import bench_env
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import APP_SCRIPT
from tests.peers.oidc import OidcConfig, start_oidc_provider
from tests.peers.peer_process import start_peer
from tests.support.daemon import chctl, rpc

ID_JAG_SERVER = bench_env.REPO / "tests" / "peers" / "id_jag_server.py"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SECRET = "bench-secret-" + secrets.token_hex(8)


def clients(jwk: dict[str, Any]) -> tuple[str, ...]:
    common = {"grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [], "scope": "mcp:read"}
    idp = {
        "client_id": "bench-idp",
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
        "response_types": ["code"],
    }
    return (
        json.dumps({"client_id": "bench-basic", "client_secret": SECRET, **common}),
        json.dumps(
            {
                "client_id": "bench-jwt",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [jwk]},
                **common,
            }
        ),
        json.dumps(idp),
    )


def call(env: bench_env.UserEnv, method: str, **params: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    reply = rpc(env.socket, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=60)
    elapsed = time.perf_counter() - started
    assert "result" in reply, reply
    return elapsed, reply["result"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "alg": "ES256"}
    with bench_env.user_env() as env:
        logs = env.root
        config = OidcConfig(
            client_credentials=True, token_exchange=True, id_jag_client_id="bench-mcp", extra_clients=clients(jwk)
        )
        idp = start_oidc_provider(config, logs / "oidc.log")
        as_peer = start_peer(
            [sys.executable, str(ID_JAG_SERVER), "--idp", idp.issuer, "--client-id", "bench-mcp"],
            log_path=logs / "as.log",
            env={"ID_JAG_CLIENT_SECRET": SECRET, "ID_JAG_INTROSPECTION_SECRET": SECRET},
        )
        secret_env = {"MCP_PEER_CLIENT_SECRET": idp.introspection_client[1]}
        cc_server = start_peer(
            [sys.executable, str(APP_SCRIPT), "--introspect", idp.issuer, "--client-id", idp.introspection_client[0]],
            log_path=logs / "m1.log",
            env=secret_env,
        )
        idp_server = start_peer(
            [
                sys.executable,
                str(APP_SCRIPT),
                "--introspect",
                str(as_peer.ready["issuer"]),
                "--client-id",
                "mcp-resource-server",
            ],
            log_path=logs / "m2.log",
            env={"MCP_PEER_CLIENT_SECRET": SECRET},
        )
        try:
            with bench_env.running_daemon(env, {"CH_MIN_REFRESH_SPACING_S": "0"}):
                figures = measure(
                    env, runs, pem.decode(), idp.issuer, str(cc_server.ready["url"]), str(idp_server.ready["url"])
                )
        finally:
            for peer in (cc_server, idp_server, as_peer):
                peer.stop()
            idp.stop()
    rows = [(label, f"{value} ms") for label, value in figures.items()]
    bench_env.report(
        f"renewals without a person, median of {runs} (token.refresh, which makes the grant)", rows, figures
    )


def measure(env: bench_env.UserEnv, runs: int, pem: str, idp: str, cc_url: str, idp_url: str) -> dict[str, float]:
    cwd = str(env.project)
    assert chctl(env, "init").returncode == 0
    add_basic, _ = call(
        env,
        "mcp.add",
        cwd=cwd,
        name="basic",
        url=cc_url,
        client_credentials=True,
        client_id="bench-basic",
        client_secret=SECRET,
        scopes=["mcp:read"],
    )
    call(
        env,
        "mcp.add",
        cwd=cwd,
        name="keyed",
        url=cc_url,
        client_credentials=True,
        client_id="bench-jwt",
        private_key=pem,
        signing_alg="ES256",
        scopes=["mcp:read"],
    )
    assert chctl(env, "idp", "add", "corp", "--issuer", idp, "--client-id", "bench-idp").returncode == 0
    assert chctl(env, "idp", "login", "corp", extra_env={"BROWSER": browser_command()}).returncode == 0
    call(env, "mcp.add", cwd=cwd, name="derived", url=idp_url, idp="corp", client_id="bench-mcp", client_secret=SECRET)
    figures = {"add_client_credentials_ms": round(add_basic * 1000, 2)}
    for name, label in (
        ("basic", "client_secret_basic"),
        ("keyed", "private_key_jwt"),
        ("derived", "idp_exchange_and_jwt_bearer"),
    ):
        samples = [call(env, "token.refresh", name=name)[0] for _ in range(runs)]
        figures[f"renew_{label}_ms"] = bench_env.median_ms(samples)
    return figures


if __name__ == "__main__":
    main()
