"""A login that got no refresh token, as chctl shows it: a state with a deadline, not a network error."""

from __future__ import annotations

import json
import time

from context_harness.primitives.oauth import Credential, OAuthTokens, TokenState
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv


def test_status_and_refresh_say_when_to_log_in_again(user_env: UserEnv) -> None:
    config = user_env.project / "opencode.json"
    config.write_text('{"mcp": {"srv": {"type": "remote", "url": "http://127.0.0.1:9/mcp", "oauth": false}}}\n')
    now = time.time()
    TokenStore(user_env.ch_home / "tokens", user_env.ch_home / "secrets").save(
        Credential(
            name="srv",
            kind="oauth",
            state=TokenState.ACTIVE,
            token_endpoint="http://127.0.0.1:9/token",
            client_id="client-1",
            tokens=OAuthTokens(access_token="access-no-refresh", issued_at=now, expires_at=now + 2400),
            server_url="http://127.0.0.1:9/mcp",
        )
    )
    binding = Binding(path=str(config.resolve()), url="http://127.0.0.1:9/mcp")
    BindingStore(user_env.ch_home / "bindings.json").bind("srv", binding)
    process = DaemonProcess(user_env).start()
    try:
        [row] = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
        assert row["state"] == "active" and row["next_refresh_at"] is None  # nothing to refresh with
        assert row["note"].startswith("expires in 40m, no refresh token: run `chctl auth srv` before then")
        table = chctl(user_env, "status").stdout
        assert "no refresh token: run `chctl auth srv` before then" in table
        refreshed = chctl(user_env, "refresh", "srv")
        assert refreshed.returncode != 0
        assert "error[AUTH_REQUIRED]" in refreshed.stderr and "NETWORK" not in refreshed.stderr
        assert "no refresh token" in refreshed.stderr and "keeps retrying" not in refreshed.stderr
    finally:
        process.stop()
