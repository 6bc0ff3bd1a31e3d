"""Behind a company proxy that intercepts TLS: the real daemon and chctl, mitmproxy's `mitmdump` re-signing
every connection with its own CA, MCP SDK servers behind an HTTPS front whose certificate comes from a
`trustme` CA, oidc-provider for a login and a refresh. All on 127.0.0.1, but named `mcp.test` for the daemon:
loopback is never proxied, so the servers go by a name the proxy resolves (to 127.0.0.1: tests/support/
mitm_hosts.py); mitmdump's flow log shows that each request went through it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.peers.fake_browser import browser_command
from tests.peers.mapped_hosts import VARIABLE as TEST_HOSTS
from tests.peers.mcp_servers import APP_SCRIPT, McpApiKeyServer, McpApiKeyServerFactory
from tests.peers.oidc import OidcProvider, OidcProviderFactory
from tests.peers.peer_process import PeerProcess, start_peer
from tests.support.daemon import DaemonProcess, chctl, wait_for
from tests.support.env import UserEnv
from tests.support.mitm import TEST_HOST, MitmProxy, wait_for_flow
from tests.test_bridge import add_bridged, bridged_session, call, free_port, messages_of

TLS_FRONT = Path(__file__).resolve().parent / "peers" / "tls_front.py"
PROXY_USER, PROXY_PASSWORD = "ch-user", "pr0xy-pa55"


@pytest.fixture(scope="module")
def server_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA that signs the real servers' certificates; known to the proxy, not to the daemon."""
    directory = tmp_path_factory.mktemp("server-ca")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", TEST_HOST)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(directory / "leaf.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "leaf-key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "leaf-cert.pem"))
    return directory


@pytest.fixture(scope="module")
def https_mcp(
    server_ca: Path, mcp_api_key_server: McpApiKeyServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, McpApiKeyServer]]:
    """An API-key MCP SDK server reached as https://mcp.test:PORT/mcp (through the proxy: 127.0.0.1)."""
    server = mcp_api_key_server()
    upstream = server.url.rsplit("/", 1)[0]
    leaf = str(server_ca / "leaf.pem")
    log_path = tmp_path_factory.mktemp("tls-front") / "front.log"
    front: PeerProcess = start_peer(
        [sys.executable, str(TLS_FRONT), "--cert", leaf, "--key", leaf, "--upstream", upstream], log_path=log_path
    )
    yield f"https://{TEST_HOST}:{front.ready['port']}/mcp", server
    front.stop()


@pytest.fixture(scope="module")
def mitm(server_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitmProxy]:
    proxy = MitmProxy(tmp_path_factory.mktemp("mitm"), server_ca / "ca.pem").start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def mitm_with_auth(server_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitmProxy]:
    proxy = MitmProxy(tmp_path_factory.mktemp("mitm-auth"), server_ca / "ca.pem", f"{PROXY_USER}:{PROXY_PASSWORD}")
    yield proxy.start()
    proxy.stop()


def start_daemon(user_env: UserEnv, **env: str) -> DaemonProcess:
    return DaemonProcess(user_env, extra_env=env).start()


def echo_through_bridge(user_env: UserEnv, name: str = "corp") -> str:
    async def scenario() -> str:
        async with bridged_session(user_env, name) as session:
            return await call(session, "echo", text="through the proxy")

    return asyncio.run(asyncio.wait_for(scenario(), 90))  # a stream held by the proxy fails, not hangs


def bridge_error(user_env: UserEnv, name: str = "corp") -> str:
    with pytest.raises(BaseException) as raised:
        echo_through_bridge(user_env, name)
    return messages_of(raised.value)


def add_https_server(user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], name: str = "corp") -> None:
    url, server = https_mcp
    add_bridged(user_env, name, "--url", url, "--key-header", server.header, "-k", server.key)


def test_a_bridged_session_goes_through_the_intercepting_proxy_trusting_the_company_ca(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], mitm: MitmProxy
) -> None:
    daemon = start_daemon(user_env, HTTPS_PROXY=mitm.url, CH_CA_BUNDLE=str(mitm.ca_pem))
    try:
        add_https_server(user_env, https_mcp)
        assert echo_through_bridge(user_env) == "through the proxy"
        url = https_mcp[0]
        wait_for_flow(mitm, f"POST {url}")
        # The server's own stream (the GET the SDK server answers with SSE) is carried through the proxy too.
        wait_for_flow(mitm, f"GET {url}")
    finally:
        daemon.stop()


def test_the_legacy_sse_transport_s_long_lived_stream_goes_through_the_proxy(
    user_env: UserEnv,
    server_ca: Path,
    mcp_api_key_server: McpApiKeyServerFactory,
    mitm: MitmProxy,
    tmp_path: Path,
) -> None:
    server = mcp_api_key_server(transport="sse")
    leaf = str(server_ca / "leaf.pem")
    upstream = server.url.rsplit("/", 1)[0]
    argv = [sys.executable, str(TLS_FRONT), "--cert", leaf, "--key", leaf, "--upstream", upstream]
    front = start_peer(argv, log_path=tmp_path / "front.log")
    daemon = start_daemon(user_env, HTTPS_PROXY=mitm.url, CH_CA_BUNDLE=str(mitm.ca_pem))
    try:
        url = f"https://{TEST_HOST}:{front.ready['port']}/sse"
        add_bridged(user_env, "corp", "--url", url, "--key-header", server.header, "-k", server.key)
        assert echo_through_bridge(user_env) == "through the proxy"
        wait_for_flow(mitm, f"POST https://{TEST_HOST}:{front.ready['port']}/messages/")  # posted through the proxy
        wait_for_flow(mitm, f"GET {url}")  # the stream, logged once it ends with the session
    finally:
        daemon.stop()
        front.stop()


def test_without_the_company_ca_the_bridge_says_which_certificate_and_the_daemon_keeps_serving(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], mitm: MitmProxy
) -> None:
    daemon = start_daemon(user_env, HTTPS_PROXY=mitm.url)
    try:
        add_https_server(user_env, https_mcp)
        started = time.monotonic()
        error = bridge_error(user_env)
        assert time.monotonic() - started < 30  # within the HTTP timeout, not a hang
        port = https_mcp[0].split(":")[2].split("/")[0]
        proxy_port = mitm.url.rsplit(":", 1)[1]
        expected = f"the certificate of {TEST_HOST}:{port} does not verify (through the proxy 127.0.0.1:{proxy_port})"
        assert f"{expected}: certificate not trusted" in error and "CH_CA_BUNDLE" in error
        assert chctl(user_env, "status").returncode in (0, 1)  # the daemon still answers
        assert daemon.proc is not None and daemon.proc.poll() is None

        # The fix, without a restart: the company CA in daemon.env, then a reload.
        env_file = user_env.ch_home / "daemon.env"
        env_file.write_text(f"CH_CA_BUNDLE={mitm.ca_pem}\n")
        env_file.chmod(0o600)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "daemon_reloaded" for e in daemon.log_events()), 10, what="reload")
        assert echo_through_bridge(user_env) == "through the proxy"
    finally:
        daemon.stop()


def test_no_proxy_reaches_a_listed_host_directly_and_loopback_always(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], server_ca: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # a proxy that is not there
    daemon = start_daemon(user_env, HTTPS_PROXY=nobody, NO_PROXY=TEST_HOST, CH_CA_BUNDLE=str(server_ca / "ca.pem"))
    try:
        url, server = https_mcp
        loopback = url.replace(TEST_HOST, "127.0.0.1")
        add_bridged(user_env, "local", "--url", loopback, "--key-header", server.header, "-k", server.key)
        assert echo_through_bridge(user_env, "local") == "through the proxy"  # direct: the proxy is not there
        # Listed in NO_PROXY: the daemon resolves the name itself (and cannot: so it did not ask the proxy).
        add_https_server(user_env, https_mcp)
        error = bridge_error(user_env)
        assert f"cannot resolve {TEST_HOST}" in error and "proxy" not in error, error
    finally:
        daemon.stop()


def test_a_proxy_that_cannot_be_reached_is_named_with_its_variable(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], server_ca: Path
) -> None:
    port = free_port()
    daemon = start_daemon(user_env, https_proxy=f"http://127.0.0.1:{port}", CH_CA_BUNDLE=str(server_ca / "ca.pem"))
    try:
        add_https_server(user_env, https_mcp)
        assert f"cannot reach the proxy 127.0.0.1:{port} (from https_proxy)" in bridge_error(user_env)
    finally:
        daemon.stop()


def test_a_proxy_that_wants_credentials_works_with_them_in_the_url_and_says_407_without(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], mitm_with_auth: MitmProxy
) -> None:
    proxy = mitm_with_auth
    bare = start_daemon(user_env, HTTPS_PROXY=proxy.url, CH_CA_BUNDLE=str(proxy.ca_pem))
    try:
        add_https_server(user_env, https_mcp)
        error = bridge_error(user_env)
        assert "wants credentials (HTTP 407)" in error and "HTTPS_PROXY=http://USER:PASSWORD@" in error
    finally:
        bare.stop()
    with_credentials = proxy.url.replace("http://", f"http://{PROXY_USER}:{PROXY_PASSWORD}@")
    daemon = start_daemon(user_env, HTTPS_PROXY=with_credentials, CH_CA_BUNDLE=str(proxy.ca_pem))
    try:
        assert echo_through_bridge(user_env) == "through the proxy"
        wait_for_flow(proxy, f"POST {https_mcp[0]}")
    finally:
        daemon.stop()
    assert PROXY_PASSWORD not in bare.log() + daemon.log()


def test_doctor_shows_the_daemon_s_proxy_and_ca_and_warns_where_the_shell_differs(
    user_env: UserEnv, server_ca: Path
) -> None:
    ca = str(server_ca / "ca.pem")
    daemon = start_daemon(user_env, HTTPS_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128", CH_CA_BUNDLE=ca)
    try:
        shell = {"HTTP_PROXY": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.corp:8080", "CH_CA_BUNDLE": ca}
        done = chctl(user_env, "doctor", "--json", extra_env=shell)
        assert PROXY_PASSWORD not in done.stdout + done.stderr
        checks = {(c["name"], c["message"]) for c in json.loads(done.stdout)}
        assert ("network_proxy", "the daemon uses HTTPS_PROXY=127.0.0.1:3128") in checks
        assert ("network_ca", f"the daemon trusts the system's certificates and CH_CA_BUNDLE={ca}") in checks
        assert ("network_differs", "HTTP_PROXY is set in this shell (proxy.corp:8080) but not for the daemon") in checks
        assert ("network_differs", "HTTPS_PROXY is set for the daemon (127.0.0.1:3128) but not in this shell") in checks
        assert not any("CH_CA_BUNDLE" in message for name, message in checks if name == "network_differs")
    finally:
        daemon.stop()


def check(user_env: UserEnv) -> tuple[int, dict[str, Any]]:
    done = chctl(user_env, "check", "corp", "--json", "--timeout", "30")
    (server,) = json.loads(done.stdout)
    return done.returncode, server


def test_chctl_check_names_the_certificate_the_proxy_and_the_407_and_says_ok_through_the_proxy(
    user_env: UserEnv, https_mcp: tuple[str, McpApiKeyServer], mitm: MitmProxy, mitm_with_auth: MitmProxy
) -> None:
    proxy_where = mitm.url.removeprefix("http://")
    daemon = start_daemon(user_env, HTTPS_PROXY=mitm.url)
    try:
        add_https_server(user_env, https_mcp)
        code, server = check(user_env)
        assert (code, server["outcome"], server["proxy"]) == (2, "certificate", proxy_where)
        assert server["message"].endswith("certificate not trusted") and "CH_CA_BUNDLE" in server["next_action"]

        env_file = user_env.ch_home / "daemon.env"
        env_file.write_text(f"CH_CA_BUNDLE={mitm.ca_pem}\n")
        env_file.chmod(0o600)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "daemon_reloaded" for e in daemon.log_events()), 10, what="reload")
        code, server = check(user_env)
        assert (code, server["outcome"], server["proxy"], server["tools"] > 0) == (0, "ok", proxy_where, True)
        text = chctl(user_env, "check", "corp").stdout
        assert text.startswith("✓ corp: ok · ") and text.rstrip().endswith(f"via {proxy_where}")
    finally:
        daemon.stop()

    daemon = start_daemon(user_env, HTTPS_PROXY=mitm_with_auth.url, CH_CA_BUNDLE=str(mitm_with_auth.ca_pem))
    try:
        code, server = check(user_env)
        assert (code, server["outcome"]) == (2, "proxy") and "HTTP 407" in server["message"]
        assert "USER:PASSWORD@" in server["next_action"]
    finally:
        daemon.stop()

    port = free_port()
    daemon = start_daemon(user_env, HTTPS_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
    try:
        code, server = check(user_env)
        assert (code, server["outcome"], server["proxy"]) == (2, "proxy", f"127.0.0.1:{port}")
        assert server["message"] == f"cannot reach the proxy 127.0.0.1:{port} (from HTTPS_PROXY)"
        assert PROXY_PASSWORD not in json.dumps(server)
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def tls_oauth(
    server_ca: Path, oidc_provider_factory: OidcProviderFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OidcProvider, str]]:
    """oidc-provider at https://mcp.test:PORT and an MCP resource server at https://mcp.test:PORT/mcp that
    introspects there (resolving mcp.test to 127.0.0.1 itself, trusting the test CA)."""
    leaf = str(server_ca / "leaf.pem")
    provider = oidc_provider_factory(
        tls_cert=str(server_ca / "leaf-cert.pem"),
        tls_key=str(server_ca / "leaf-key.pem"),
        issuer_host=TEST_HOST,
        resource_prefix=f"https://{TEST_HOST}:",
    )
    client_id, secret = provider.introspection_client
    argv = [sys.executable, str(APP_SCRIPT), "--introspect", provider.issuer, "--client-id", client_id]
    argv += ["--public-host", TEST_HOST, "--tls-cert", leaf, "--tls-key", leaf]
    env = {"MCP_PEER_CLIENT_SECRET": secret, TEST_HOSTS: TEST_HOST, "SSL_CERT_FILE": str(server_ca / "ca.pem")}
    resource = start_peer(argv, log_path=tmp_path_factory.mktemp("tls-resource") / "mcp.log", env=env)
    yield provider, str(resource.ready["url"])
    resource.stop()


def test_a_login_a_refresh_and_a_bridged_session_at_https_servers_go_through_the_intercepting_proxy(
    user_env: UserEnv, server_ca: Path, tls_oauth: tuple[OidcProvider, str], mitm: MitmProxy
) -> None:
    provider, resource = tls_oauth
    assert provider.issuer.startswith(f"https://{TEST_HOST}:") and resource.startswith(f"https://{TEST_HOST}:")
    daemon = start_daemon(user_env, HTTPS_PROXY=mitm.url, CH_CA_BUNDLE=str(mitm.ca_pem))
    try:
        add_bridged(user_env, "tls", "--url", resource)
        # The browser logs in at the issuer directly, trusting the test CA.
        browser = {"BROWSER": browser_command(), "SSL_CERT_FILE": str(server_ca / "ca.pem"), TEST_HOSTS: TEST_HOST}
        login = chctl(user_env, "auth", "tls", extra_env=browser)
        assert login.returncode == 0, login.stderr
        refreshed = chctl(user_env, "refresh", "tls")
        assert refreshed.returncode == 0, refreshed.stderr

        async def scenario() -> str:
            async with bridged_session(user_env, "tls") as session:
                return await call(session, "whoami")

        assert asyncio.run(asyncio.wait_for(scenario(), 90))
        # mitmdump shortens long URLs in its log: compare the start of each line.
        origin = resource.rsplit("/", 1)[0]
        for request in (
            f"GET {origin}/.well-known/oauth-prot",  # discovery at the resource server
            f"GET {provider.issuer}/.well-known/",  # and at the authorization server
            f"POST {provider.issuer}/reg",  # registration
            f"POST {resource}",  # the bridged session
        ):
            wait_for_flow(mitm, request)
        assert mitm.flows().count(f"POST {provider.issuer}/token") >= 2  # the code exchange and the refresh
    finally:
        daemon.stop()

    # The proxy goes away: the refresh fails naming it, the stored tokens stay, and the daemon retries.
    token_file = user_env.ch_home / "tokens" / "tls.json"
    before = token_file.read_bytes()
    port = free_port()
    daemon = start_daemon(user_env, HTTPS_PROXY=f"http://127.0.0.1:{port}", CH_CA_BUNDLE=str(mitm.ca_pem))
    try:
        failed = chctl(user_env, "refresh", "tls")
        assert failed.returncode != 0
        assert f"cannot reach the proxy 127.0.0.1:{port} (from HTTPS_PROXY)" in failed.stderr
        assert token_file.read_bytes() == before
        (server,) = json.loads(chctl(user_env, "status", "--json").stdout)["servers"]
        assert server["state"] == "retrying" and server["usable"] and server["next_refresh_at"]
        assert server["last_error"] == f"cannot reach the proxy 127.0.0.1:{port} (from HTTPS_PROXY)"
    finally:
        daemon.stop()
