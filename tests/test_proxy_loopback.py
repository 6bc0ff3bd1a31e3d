"""Plain http:// to this machine never goes through a proxy (issue 30 §2), tested as the attack: the proxy the
variables name is another host's (our recording proxy on 127.0.0.1 stands in for it, forwarding what it gets so
that on the old code everything works and the record shows what was given away). The real daemon, chctl and
bridge, oidc-provider, MCP SDK servers.

And behind that, the send-time rule in net/session.py: whatever the caller, a credential for plain http:// that a
proxy would carry is refused before anything is sent; and a proxy's 407 for an http:// target is the proxy's,
named with its variable (§11.4).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from context_harness.net.proxies import from_variables
from context_harness.net.session import NetworkSettings, new_session
from context_harness.oauth import http
from context_harness.primitives.result import Failure
from tests.peers.fake_browser import browser_command
from tests.peers.mcp_servers import McpApiKeyServerFactory, McpOAuthServerFactory
from tests.peers.oidc import OidcProviderFactory
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.recording_proxy import RecordingProxy, start_recording_proxy
from tests.test_bridge import add_bridged, bridged_session, call, free_port, messages_of

SECRET = "sk-live-7c1d-the-key-a-proxy-must-not-read"


@pytest.fixture
def recording_proxy(tmp_path: Path) -> Iterator[RecordingProxy]:
    proxy = start_recording_proxy(tmp_path / "proxy")
    yield proxy
    proxy.stop()


@pytest.fixture
def refusing_proxy(tmp_path: Path) -> Iterator[RecordingProxy]:
    proxy = start_recording_proxy(tmp_path / "proxy-407", answer=407)
    yield proxy
    proxy.stop()


def through(proxy: RecordingProxy) -> dict[str, str]:
    return {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "ALL_PROXY": proxy.url}


def seen_by(proxy: RecordingProxy) -> list[str]:
    return [f"{r['method']} {r['target']}" for r in proxy.requests()]


# --- the attack ----------------------------------------------------------------------------------------------


def test_a_bridged_key_a_login_a_refresh_and_a_token_refresh_to_loopback_send_the_proxy_nothing(
    user_env: UserEnv,
    recording_proxy: RecordingProxy,
    mcp_api_key_server: McpApiKeyServerFactory,
    oidc_provider_factory: OidcProviderFactory,
    mcp_oauth_server_factory: McpOAuthServerFactory,
) -> None:
    keyed = mcp_api_key_server(key=SECRET)
    provider = oidc_provider_factory(access_token_ttl=10)
    server = mcp_oauth_server_factory(provider)
    assert server.url.startswith("http://127.0.0.1:") and provider.issuer.startswith("http://127.0.0.1:")
    # The refresher's own plan comes late (95 %): the `chctl token` below finds the token due first.
    settings = {"CH_REFRESH_FRACTION": "0.95", "CH_REFRESH_JITTER": "0", **through(recording_proxy)}
    daemon = DaemonProcess(user_env, extra_env=settings).start()
    try:
        add_bridged(user_env, "keyed", "--url", keyed.url, "--key-header", keyed.header, "-k", SECRET)
        add_bridged(user_env, "srv", "--url", server.url)
        login = chctl(user_env, "auth", "srv", extra_env={"BROWSER": browser_command()})  # the code exchange
        assert login.returncode == 0, login.stderr
        refreshed = chctl(user_env, "refresh", "srv")
        assert refreshed.returncode == 0, refreshed.stderr
        tokens = json.loads((user_env.ch_home / "tokens" / "srv.json").read_text())["tokens"]
        # Due for a caller once less than half of its 10 s is left: `chctl token` refreshes it.
        wait_for(lambda: time.time() > tokens["expires_at"] - 4.5, 15, interval_s=0.05, what="the token to be due")
        token = chctl(user_env, "token", "srv")
        assert token.returncode == 0, token.stderr
        reads = [e for e in daemon.log_events() if e.get("event") == "token_read"]
        assert reads and reads[-1]["refreshed"], reads

        async def sessions() -> tuple[str, str]:
            async with bridged_session(user_env, "keyed") as keyed_session:
                echoed = await call(keyed_session, "echo", text="direct")
            async with bridged_session(user_env, "srv") as oauth_session:
                return echoed, await call(oauth_session, "whoami")

        echoed, who = asyncio.run(asyncio.wait_for(sessions(), 90))
        assert echoed == "direct" and who
    finally:
        daemon.stop()
    assert seen_by(recording_proxy) == []


# --- which hosts are loopback --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/mcp",
        "http://127.8.9.10/mcp",
        "http://localhost:3000/mcp",
        "http://LOCALHOST./mcp",
        "https://[::1]:8443/mcp",
        "http://[::ffff:127.0.0.1]/mcp",
    ],
)
def test_loopback_is_implicitly_in_no_proxy_whatever_the_variables_say(url: str) -> None:
    proxies = from_variables({"HTTP_PROXY": "http://proxy.corp:3128", "HTTPS_PROXY": "http://proxy.corp:3128"})
    assert proxies.for_url(url) is None


@pytest.mark.parametrize("host", ["mcp.test", "localhost.example.com", "10.0.0.1", "::2", "127.0.0.1.nip.io"])
def test_other_hosts_still_go_through_the_proxy(host: str) -> None:
    assert from_variables({"ALL_PROXY": "http://proxy.corp:3128"}).for_url(f"http://{host}/") is not None


# --- the send-time rule, whoever sends -----------------------------------------------------------------------


@pytest.fixture
async def plain_server() -> AsyncIterator[int]:
    """A plain-http server on loopback, answering 200 to anything."""

    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def send(proxy: RecordingProxy, url: str, **kwargs: object) -> Failure | int:
    async with new_session(NetworkSettings(from_variables(through(proxy)))) as session:
        sent = await http.request(session, "POST", url, timeout_s=10, **kwargs)  # type: ignore[arg-type]
    return sent if isinstance(sent, Failure) else sent.value.status


@pytest.mark.parametrize(
    "credential",
    [
        {"auth_header": f"Bearer {SECRET}"},
        {"headers": {"X-API-Key": SECRET}},
        {"headers": {"Mcp-Api-Key": SECRET, "Mcp-Method": "tools/call"}},
        {"form": {"grant_type": "refresh_token", "refresh_token": SECRET}},
        {"form": {"grant_type": "authorization_code", "code": SECRET, "code_verifier": "v"}},
        # A static header (`--header`, a registry's): not the protocol's own, so a credential as far as we can tell.
        {"headers": {"X-Region": "eu-west-1"}},
    ],
    ids=["bearer", "api-key-header", "mcp-named-key-header", "refresh-form", "code-form", "static-header"],
)
async def test_a_credential_for_plain_http_that_a_proxy_would_carry_is_refused_before_anything_is_sent(
    recording_proxy: RecordingProxy, credential: dict[str, object]
) -> None:
    failed = await send(recording_proxy, "http://mcp.test:8080/token", **credential)
    assert isinstance(failed, Failure), failed
    assert failed.error == (
        f"refusing to send a credential to mcp.test in clear text through the proxy {recording_proxy.where} "
        "(from HTTP_PROXY): nothing was sent"
    )
    assert failed.hint is not None and "https://" in failed.hint and "NO_PROXY" in failed.hint
    assert recording_proxy.requests() == []


async def test_loopback_gets_its_credential_directly_and_other_hosts_their_plain_requests_through_the_proxy(
    recording_proxy: RecordingProxy, plain_server: int
) -> None:
    loopback = f"http://127.0.0.1:{plain_server}/mcp"
    assert await send(recording_proxy, loopback, headers={"X-API-Key": SECRET}) == 200
    assert recording_proxy.requests() == []
    # No credential: the proxy carries it (it cannot resolve mcp.test, and answers with an error of its own).
    assert isinstance(await send(recording_proxy, "http://mcp.test:1/mcp", json_body={"jsonrpc": "2.0"}), int)
    assert seen_by(recording_proxy) == ["POST http://mcp.test:1/mcp"]


# --- a proxy's 407 for an http:// target (§11.4) -------------------------------------------------------------


def test_a_proxy_s_407_for_an_http_target_is_the_proxy_s_named_with_its_variable(
    user_env: UserEnv, refusing_proxy: RecordingProxy
) -> None:
    url = f"http://mcp.test:{free_port()}/mcp"  # a server that needs no credential, behind the company proxy
    daemon = DaemonProcess(user_env, extra_env={"HTTP_PROXY": refusing_proxy.url}).start()
    try:
        add_bridged(user_env, "open", "--url", url)

        async def scenario() -> None:
            async with bridged_session(user_env, "open"):
                pass

        with pytest.raises(BaseException) as raised:
            asyncio.run(asyncio.wait_for(scenario(), 60))
        said = messages_of(raised.value)
        assert f"the proxy {refusing_proxy.where} (from HTTP_PROXY) wants credentials (HTTP 407)" in said, said
        done = chctl(user_env, "check", "open", "--json", "--timeout", "30")
        (probe,) = json.loads(done.stdout)
        assert (probe["outcome"], probe["proxy"]) == ("proxy", refusing_proxy.where), probe
        assert probe["message"] == f"the proxy {refusing_proxy.where} (from HTTP_PROXY) wants credentials (HTTP 407)"
        assert "HTTP_PROXY=http://USER:PASSWORD@" in probe["next_action"]
    finally:
        daemon.stop()
    assert {r["target"] for r in refusing_proxy.requests()} == {url}  # it went to the proxy, and only there
