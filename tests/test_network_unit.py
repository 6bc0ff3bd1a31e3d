"""Proxies and trust without a daemon: which proxy a URL goes through (the usual variables, the usual
precedence), and what a certificate that does not verify is called — against real TLS servers on 127.0.0.1
with certificates from a `trustme` CA."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from context_harness.net.ca_bundle import read_ca_bundle
from context_harness.net.proxies import from_variables
from context_harness.net.session import NetworkSettings, new_session
from context_harness.oauth import http
from context_harness.primitives.result import ErrorCode, Failure


def test_the_scheme_s_own_variable_wins_over_all_proxy_and_lower_case_over_upper_case() -> None:
    proxies = from_variables(
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "ALL_PROXY": "http://all:3"}
    )
    chosen = proxies.for_url("https://mcp.example.com/mcp")
    assert chosen is not None and chosen.url == "http://lower:2" and chosen.variable == "https_proxy"
    plain = proxies.for_url("http://mcp.example.com/mcp")
    assert plain is not None and plain.url == "http://all:3" and plain.variable == "ALL_PROXY"


def test_the_environment_wins_over_daemon_env_and_a_bare_host_port_is_an_http_proxy() -> None:
    proxies = from_variables({"HTTPS_PROXY": "proxy.corp:3128"}, {"HTTPS_PROXY": "http://other:1"})
    chosen = proxies.for_url("https://a.example/")
    assert chosen is not None and chosen.url == "http://proxy.corp:3128" and chosen.where == "proxy.corp:3128"


def test_no_proxy_bypasses_listed_hosts_and_their_subdomains() -> None:
    proxies = from_variables({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "internal.corp,127.0.0.1"})
    assert proxies.for_url("https://mcp.internal.corp/mcp") is None
    assert proxies.for_url("https://127.0.0.1:8443/mcp") is None
    assert proxies.for_url("https://mcp.example.com/mcp") is not None
    assert from_variables({"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}).for_url("https://x/") is None


def test_no_variable_means_direct_and_the_summary_never_shows_credentials() -> None:
    assert from_variables({}).for_url("https://x.example/") is None
    summary = from_variables({"HTTPS_PROXY": "http://user:s3cret@proxy.corp:3128"}).summary()
    assert summary == {"HTTPS_PROXY": "proxy.corp:3128"}


# --- real TLS servers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "company-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def _https_server(cert: trustme.LeafCert) -> AsyncIterator[str]:
    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def good_server(ca: trustme.CA) -> AsyncIterator[str]:
    async for url in _https_server(ca.issue_cert("127.0.0.1")):
        yield url


async def _get(url: str, network: NetworkSettings) -> Failure | int:
    async with new_session(network) as session:
        sent = await http.request(session, "GET", url, timeout_s=10)
    return sent if isinstance(sent, Failure) else sent.value.status


async def test_the_company_ca_in_ch_ca_bundle_is_trusted_in_addition_to_the_system_store(
    good_server: str, ca_file: Path
) -> None:
    assert await _get(good_server, NetworkSettings(ca_bundle=read_ca_bundle(ca_file))) == 200


async def test_an_unknown_ca_is_certificate_not_trusted_naming_the_host_and_ch_ca_bundle(good_server: str) -> None:
    failed = await _get(good_server, NetworkSettings())
    assert isinstance(failed, Failure) and failed.code is ErrorCode.NETWORK
    port = good_server.rsplit(":", 1)[1].rstrip("/")
    assert failed.error == f"the certificate of 127.0.0.1:{port} does not verify: certificate not trusted"
    assert failed.hint is not None and "CH_CA_BUNDLE" in failed.hint


async def test_an_expired_certificate_is_called_expired(ca: trustme.CA, ca_file: Path) -> None:
    expired = ca.issue_cert("127.0.0.1", not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    async for url in _https_server(expired):
        failed = await _get(url, NetworkSettings(ca_bundle=read_ca_bundle(ca_file)))
        assert isinstance(failed, Failure) and failed.error.endswith("does not verify: expired")


async def test_a_certificate_for_another_name_is_a_hostname_mismatch(ca: trustme.CA, ca_file: Path) -> None:
    async for url in _https_server(ca.issue_cert("mcp.example.com")):
        failed = await _get(url, NetworkSettings(ca_bundle=read_ca_bundle(ca_file)))
        assert isinstance(failed, Failure) and failed.error.endswith("does not verify: hostname mismatch")


async def test_a_socks_proxy_is_refused_naming_its_variable(good_server: str, ca_file: Path) -> None:
    proxies = from_variables({"ALL_PROXY": "socks5://user:pw@127.0.0.1:1080"})
    network = NetworkSettings(proxies, read_ca_bundle(ca_file))
    failed = await _get(good_server.replace("127.0.0.1", "mcp.test"), network)  # loopback is never proxied
    assert isinstance(failed, Failure) and "ALL_PROXY names a proxy context-harness cannot use" in failed.error
    assert "pw" not in failed.error + (failed.hint or "")


def test_a_ch_ca_bundle_that_is_not_pem_stops_the_settings_with_its_name(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from context_harness.daemon.settings import Settings

    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("hello")
    with pytest.raises(ValidationError, match="CH_CA_BUNDLE"):
        Settings(ca_bundle=bogus)
