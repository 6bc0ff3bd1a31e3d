"""What a failure to reach a server means, in words a person can act on: a certificate that does not verify
(and why), a proxy that cannot be reached or refuses, a proxy we cannot speak to. Messages name hosts, ports
and variables — never a proxy's credentials.
"""

from __future__ import annotations

from typing import Literal

import aiohttp

from context_harness.net.proxies import Proxy
from context_harness.primitives.result import ErrorCode, Failure

# Where a request failed to reach its server: what `chctl check` reports.
ReachKind = Literal["dns", "connect", "proxy", "certificate", "timeout"]

# OpenSSL's verification results (X509_V_ERR_*) that have a plainer name than "not trusted".
CERT_HAS_EXPIRED = 10
CERT_NOT_YET_VALID = 9
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64
CA_HINT = "if a company proxy or CA signs this connection, set CH_CA_BUNDLE to that CA's PEM file (see `chctl doctor`)"


class ReachFailure(aiohttp.ClientConnectionError):
    """A request could not be made, for a reason `failure` states (error[NETWORK] with a hint)."""

    def __init__(self, failure: Failure, kind: ReachKind) -> None:
        super().__init__(failure.error)
        self.failure = failure
        self.kind: ReachKind = kind


def reach_kind(exc: BaseException) -> ReachKind:
    """Where a request that raised `exc` failed."""
    if isinstance(exc, ReachFailure):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    return "connect"


def unreachable(name: str, exc: BaseException) -> Failure:
    """The words for a server that could not be reached: a ReachFailure's own, else where it failed."""
    if isinstance(exc, ReachFailure):
        return exc.failure
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Failure(f"{name} is not reachable: cannot resolve {exc.host}", ErrorCode.NETWORK, "check the URL")
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}" if exc.port else exc.host
        return Failure(f"{name} is not reachable: cannot connect to {where}", ErrorCode.NETWORK, "try again")
    return Failure(f"{name} is not reachable ({type(exc).__name__})", ErrorCode.NETWORK, "try again")


def certificate_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    code = getattr(exc.certificate_error, "verify_code", None)
    if code == CERT_HAS_EXPIRED:
        return "expired"
    if code == CERT_NOT_YET_VALID:
        return "not yet valid"
    if code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
        return "hostname mismatch"
    return "certificate not trusted"


def certificate_failure(exc: aiohttp.ClientConnectorCertificateError, proxy: Proxy | None) -> Failure:
    reason = certificate_reason(exc)
    port = f":{exc.port}" if exc.port not in (None, 443) else ""
    through = f" (through the proxy {proxy.where})" if proxy is not None else ""
    hint = CA_HINT if reason == "certificate not trusted" else "the server's certificate is wrong: tell its operator"
    return Failure(f"the certificate of {exc.host}{port} does not verify{through}: {reason}", ErrorCode.NETWORK, hint)


def proxy_wants_credentials(proxy: Proxy) -> Failure:
    """A 407: from the proxy's CONNECT for an https target, or as the answer itself for an http one."""
    return Failure(
        f"the proxy {proxy.where} (from {proxy.variable}) wants credentials (HTTP 407)",
        ErrorCode.NETWORK,
        f"put them in the proxy URL: {proxy.variable}=http://USER:PASSWORD@{proxy.where}",
    )


def cleartext_through_proxy(proxy: Proxy, host: str) -> Failure:
    """A credential for plain http:// that the proxy would read: refused before anything is sent."""
    return Failure(
        f"refusing to send a credential to {host} in clear text through the proxy {proxy.where} "
        f"(from {proxy.variable}): nothing was sent",
        ErrorCode.NETWORK,
        f"use the server's https:// URL, or list {host} in NO_PROXY if it is to be reached directly",
    )


def proxy_failure(exc: aiohttp.ClientError, proxy: Proxy, host: str) -> Failure:
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        if exc.status == 407:
            return proxy_wants_credentials(proxy)
        return Failure(
            f"the proxy {proxy.where} (from {proxy.variable}) refused to connect to {host}: HTTP {exc.status}",
            ErrorCode.NETWORK,
            f"check {proxy.variable}, or list {host} in NO_PROXY if it is to be reached directly",
        )
    return Failure(
        f"cannot reach the proxy {proxy.where} (from {proxy.variable})",
        ErrorCode.NETWORK,
        f"check {proxy.variable} in the daemon's environment (`chctl doctor` shows it)",
    )


def unsupported_proxy(proxy: Proxy) -> Failure:
    return Failure(
        f"{proxy.variable} names a proxy context-harness cannot use (only http:// and https:// proxies)",
        ErrorCode.NETWORK,
        f"set {proxy.variable} to the company's HTTP proxy",
    )
